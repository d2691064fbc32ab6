"""The serving side of a trained experiment, as :class:`gmmspeaker.system.Experiment` uses it.

- :mod:`~gmmspeaker.serving.audio`: audio files as the system takes them (reading, resampling,
  channels, skipping unusable files, files listed twice);
- :mod:`~gmmspeaker.serving.user_models`: the models ``gmmspeaker enroll`` adds, in their own
  files (enrol, ``--replace``, list, unenrol, refresh of stale models);
- :mod:`~gmmspeaker.serving.results`: what enrol, verify, identify and list return.

Users import :class:`~gmmspeaker.system.Experiment` (or ``gmmspeaker.Experiment``); these
modules are its parts.
"""
