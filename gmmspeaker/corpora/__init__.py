"""Corpus readers and preparers: protocol lists, Kaldi data dirs, VoxCeleb1,
LibriSpeech, and a deterministic synthetic speaker corpus.

Submodules are imported on first use, so ``import gmmspeaker.corpora`` is cheap.
"""

from __future__ import annotations

from gmmspeaker._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "Utterance": "gmmspeaker.corpora.lists",
    "Enrollment": "gmmspeaker.corpora.lists",
    "Trial": "gmmspeaker.corpora.lists",
    "read_ubm_list": "gmmspeaker.corpora.lists",
    "read_enroll_list": "gmmspeaker.corpora.lists",
    "read_trials": "gmmspeaker.corpora.lists",
    "write_ubm_list": "gmmspeaker.corpora.lists",
    "write_enroll_list": "gmmspeaker.corpora.lists",
    "write_trials": "gmmspeaker.corpora.lists",
    "read_kaldi_data_dir": "gmmspeaker.corpora.kaldi",
    "read_segments": "gmmspeaker.corpora.kaldi",
    "Segment": "gmmspeaker.corpora.kaldi",
    "read_spk2utt": "gmmspeaker.corpora.kaldi",
    "read_utt2spk": "gmmspeaker.corpora.kaldi",
    "prepare_voxceleb1": "gmmspeaker.corpora.voxceleb",
    "read_voxceleb_trials": "gmmspeaker.corpora.voxceleb",
    "prepare_librispeech": "gmmspeaker.corpora.librispeech",
    "scan_librispeech": "gmmspeaker.corpora.librispeech",
    "SyntheticCorpusConfig": "gmmspeaker.corpora.synthetic",
    "generate_corpus": "gmmspeaker.corpora.synthetic",
    "corpus_digest": "gmmspeaker.corpora.synthetic",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports("gmmspeaker.corpora", _EXPORTS, globals())
