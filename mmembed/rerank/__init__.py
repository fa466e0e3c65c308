"""mmembed.rerank"""
