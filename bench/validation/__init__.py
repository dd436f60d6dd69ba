"""Held-out validation protocol on which torchbss chooses its defaults.

Why: a default chosen on the 9 mixtures of ``shared/data/mixtures`` can be tuned to those 9
rooms (ILRMA's IP2 warm start was, and did worse on other rooms). Defaults are therefore chosen
here, on many simulated rooms, and confirmed on other rooms.

Protocol (:mod:`bench.validation.dataset` builds it, :mod:`bench.validation.run` evaluates):

* **Speech**: only the real speech of ``shared/data/speech``: the three LibriSpeech
  (``libri_*``) and the two CMU ARCTIC (``arctic_*``) utterances, five speakers. The synthetic
  ``espeak_*`` files are not used. The mixtures of ``shared/data/mixtures`` are **never** used
  here: they stay the report set, on which nothing is chosen.
* **Cases**: ``2x2`` (2 sources, 2 mics), ``3x3``, ``2s4m`` (2 sources, 4 mics). The sources of
  one mixture are distinct speakers (drawn without replacement from the five).
* **Signals**: 8 s at 16 kHz. Each source is silent for a random onset in [0, 0.6] s, then plays
  a window of its utterance starting at a random point; the utterance is looped with 0.3 s of
  silence between passes, so any start point gives a full window.
* **Rooms** (torch image-source method, :func:`torchbss.data.simulate_mixture`; design RT60 by
  Sabine's formula): shoebox 6-9 x 5-7 x 2.6-3.2 m, RT60 uniform in [0.15, 0.5] s; a uniform
  linear array, spacing uniform in [3, 15] cm, centre >= 1 m from the walls at 1.2-1.5 m
  height, random orientation; sources at a horizontal distance uniform in [1, 2.5] m from the
  array centre, azimuth in [-80, 80] deg from broadside, every pair >= 20 deg apart, 1.4-1.8 m
  high, >= 0.5 m from the walls; source images at mic 0 scaled to equal power (0 dB input SIR);
  white sensor noise at an SNR uniform in [20, 40] dB (re the mean noiseless mixture power over
  all mics); one common gain so that the peak is 0.9. Targets: the reverberant image of each
  source at mic 0, so ``mixture[0] == images.sum(0) + noise``.
* **Determinism**: everything about room ``i`` of a case comes from generators seeded by
  ``(case, i)`` (:func:`~bench.validation.dataset.room_seed`); mixtures are cached in
  ``out/validation_cache/`` (``PROTOCOL_VERSION`` in the file name's metadata invalidates it).
* **Split**: even room indices are ``"val"``, odd ones ``"test"``. Defaults are chosen on
  ``val``; the chosen ones and the alternatives are then run on ``test`` (unseen rooms, windows
  and speaker pairings; with five speakers in all, not unseen *speakers*).
* **Separation**: STFT 2048 / hop 512 (periodic Hann, :class:`torchbss.STFT`), complex64,
  ``torch.set_num_threads(1)``; every separator through one adapter
  (:func:`~bench.validation.run.separate`), named configurations in
  :data:`~bench.validation.run.METHODS`.
* **Metric**: SI-SDR improvement at mic 0 over the unprocessed mic-0 mixture, per source, with
  the permutation of maximum mean SI-SDR (:func:`torchbss.metrics.solve_permutation`), on the
  whole signal and, separately, on its second half (online methods adapt during the first).
  A run's score is the mean over its sources.
* **Runs and aggregates**: rooms x seeds, where the seed is the separator's own random seed
  (ILRMA's NMF init, online ILRMA's initial bases; ``0 1 2``); deterministic methods (AuxIVA,
  online AuxIVA) run once per room. Per (method, case): mean, median, and the number of
  collapsed runs (score < 2 dB) over the total.

Modules: :mod:`~bench.validation.dataset` (the mixtures), :mod:`~bench.validation.run` (the
resumable runner, ``python -m bench.validation.run``), :mod:`~bench.validation.choose_defaults`
(the grids that choose the defaults), :mod:`~bench.validation.report` (markdown tables from the
result JSONs in ``bench/results/validation_*.json``).
"""
