"""`python -m mmembed` runs the command-line interface."""

from mmembed.cli import main

if __name__ == "__main__":
    main()
