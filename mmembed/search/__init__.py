"""Search for people: an incremental folder index ("library"), queries by text, image or both,
a results page, and an HTTP app. Heavy imports (torch, faiss, fastapi) happen in the submodules
that need them, so importing this package is cheap."""

DEFAULT_K = 10
