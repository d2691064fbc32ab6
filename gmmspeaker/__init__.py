"""gmmspeaker: speaker recognition with GMM-UBM.

The public API is re-exported here lazily, so ``import gmmspeaker`` stays cheap
(no librosa, no h5py until they are needed).
"""

from __future__ import annotations

from gmmspeaker._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "GmmSpeakerError": "gmmspeaker.errors",
    "AudioError": "gmmspeaker.errors",
    "ConfigError": "gmmspeaker.errors",
    "DataError": "gmmspeaker.errors",
    "ModelError": "gmmspeaker.errors",
    "NotFittedError": "gmmspeaker.errors",
    "ConvergenceWarning": "gmmspeaker.errors",
    "SkippedInputWarning": "gmmspeaker.errors",
    # audio and features
    "load_audio": "gmmspeaker.audio",
    "FeatureConfig": "gmmspeaker.features",
    "Features": "gmmspeaker.features",
    "extract": "gmmspeaker.features",
    "extract_many": "gmmspeaker.features",
    "FeatureStore": "gmmspeaker.store",
    "extract_to_store": "gmmspeaker.store",
    # models
    "GaussianMixture": "gmmspeaker.gmm",
    "select_model": "gmmspeaker.gmm",
    "Stats": "gmmspeaker.gmm",
    "map_adapt": "gmmspeaker.gmm.map",
    "SpeakerModels": "gmmspeaker.gmm.map",
    "AdaptedModel": "gmmspeaker.gmm.map",
    "score_utterance": "gmmspeaker.scoring.llr",
    "score_trials": "gmmspeaker.scoring.llr",
    "ScoringContext": "gmmspeaker.scoring.llr",
    # i-vectors
    "UtteranceStats": "gmmspeaker.ivector.stats",
    "compute_stats": "gmmspeaker.ivector.stats",
    "TotalVariability": "gmmspeaker.ivector.tv",
    "train_tv": "gmmspeaker.ivector.tv",
    "extract_ivectors": "gmmspeaker.ivector.tv",
    "Backend": "gmmspeaker.ivector.backend",
    "PLDA": "gmmspeaker.ivector.backend",
    "length_normalize": "gmmspeaker.ivector.backend",
    "cosine_scores": "gmmspeaker.ivector.backend",
    # corpora
    "Utterance": "gmmspeaker.corpora.lists",
    "Enrollment": "gmmspeaker.corpora.lists",
    "Trial": "gmmspeaker.corpora.lists",
    "read_ubm_list": "gmmspeaker.corpora.lists",
    "read_enroll_list": "gmmspeaker.corpora.lists",
    "read_trials": "gmmspeaker.corpora.lists",
    "read_kaldi_data_dir": "gmmspeaker.corpora.kaldi",
    "SyntheticCorpusConfig": "gmmspeaker.corpora.synthetic",
    "generate_corpus": "gmmspeaker.corpora.synthetic",
    # evaluation
    "evaluate": "gmmspeaker.scoring.metrics",
    "eer": "gmmspeaker.scoring.metrics",
    "min_dcf": "gmmspeaker.scoring.metrics",
    "act_dcf": "gmmspeaker.scoring.metrics",
    "cllr": "gmmspeaker.scoring.metrics",
    "min_cllr": "gmmspeaker.scoring.metrics",
    "det_curve": "gmmspeaker.scoring.metrics",
    "LinearCalibration": "gmmspeaker.scoring.calibration",
    "znorm": "gmmspeaker.scoring.norm",
    "tnorm": "gmmspeaker.scoring.norm",
    "ztnorm": "gmmspeaker.scoring.norm",
    "snorm": "gmmspeaker.scoring.norm",
    "asnorm": "gmmspeaker.scoring.norm",
    "normalize_scores": "gmmspeaker.scoring.norm",
    "plot_det": "gmmspeaker.scoring.plots",
    # recipes and the trained system
    "load_recipe": "gmmspeaker.recipe.config",
    "run_recipe": "gmmspeaker.recipe.runner",
    "Experiment": "gmmspeaker.system",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports("gmmspeaker", _EXPORTS, globals())
