"""Evaluation: run files, retrieval metrics, M-BEIR and BEIR-format evaluation."""
