"""Distributed word2vec (skip-gram / CBOW with negative sampling): corpus from the text ETL's shards,
numba kernels, model averaging across processes, gensim-compatible evaluation and export."""
