"""i-vectors: Baum-Welch statistics, total-variability model, back end and PLDA."""
