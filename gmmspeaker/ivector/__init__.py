"""i-vectors: Baum-Welch statistics, total-variability training and extraction.

``stats`` computes per-utterance zeroth- and (centred, whitened) first-order statistics
under a diagonal UBM; ``tv`` trains the total-variability matrix by EM and extracts
i-vectors (posterior means) from those statistics.
"""
