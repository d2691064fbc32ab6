"""Inter-session variability modelling (ISV) on the UBM's Baum-Welch statistics.

``train`` trains the session subspace U by variational EM; ``score`` enrols speaker
offsets (session factors integrated out) and scores by linear scoring with the test
recording's session offset removed (Glembek et al., 2009).
"""
