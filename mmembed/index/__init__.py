"""mmembed.index"""
