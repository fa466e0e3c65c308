"""mmembed: universal multimodal retrieval (MLLM bi-encoders, FAISS search, MLLM reranking).

Importing the package has no side effects; submodules load their heavy dependencies lazily.
"""

__version__ = "0.1.0"
