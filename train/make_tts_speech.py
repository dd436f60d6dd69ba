"""Synthesise a folder of many synthetic training voices (espeak-ng and flite) for the held-out
protocol of the trained separators (``configs/data/heldout_2x2_tts.yaml``).

The shared data holds 8 synthetic voices, about a minute of speech in all; the trained
separators are validated and tested on real speakers (LibriSpeech, CMU ARCTIC ``aew`` and
``axb``) that they never hear. This script makes more training voices, all synthetic, from
sentences written for torchbss: ``--espeak`` espeak-ng speakers (an English accent or another
language's voice reading English, a voice variant, a base pitch and a rate drawn per speaker)
and the four flite voices (``awb``, ``rms``, ``slt``, ``kal16``; the first three are built
from CMU ARCTIC speakers other than the ``aew`` and ``axb`` of the test set). Each speaker
reads ``--sentences`` different sentences, one utterance per file.

Every utterance is trimmed to its active part (frames within 40 dB of its loudest, 50 ms
margin), resampled to 16 kHz (band-limited, :func:`torchbss.data.change_speed`), its DC
removed and peak-normalised to -3 dBFS, and written as 16-bit FLAC with a ``manifest.json``
(``utterances``: ``file``, ``speaker``, ``text``, ``engine``, ``voice``, ``pitch``, ``rate``)
that :class:`torchbss.data.DynamicMixingDataset` reads. Deterministic for a given ``--seed``
and program versions.

Needs the ``espeak-ng`` and ``flite`` programs (Debian: ``apt-get install espeak-ng flite``);
nothing is downloaded. Run::

    python train/make_tts_speech.py --out data/tts_speech      # ~1 min, ~20 MB, gitignored
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from torchbss.data import change_speed

SAMPLE_RATE = 16000

SENTENCES = [
    "The baker on the corner opens at six and sells out of rye bread before nine.",
    "Please put the blue folder on the top shelf next to the old radio.",
    "We walked along the harbour wall until the fog rolled in from the sea.",
    "My sister learned to play the violin when she was only seven years old.",
    "The train to the mountains was delayed because a tree had fallen on the track.",
    "Could you tell me how long it takes to cook rice in a pressure cooker?",
    "A small brown dog followed us all the way home from the park.",
    "The meeting has been moved to Thursday afternoon in the large room upstairs.",
    "He painted the fence white, but the rain washed half of it away.",
    "Most of the apples in the garden are ready to pick by the end of September.",
    "She keeps a notebook of every bird she has seen since she moved to the village.",
    "The lights went out during the storm, so we played cards by candlelight.",
    "Turn left after the bridge and you will see the library on your right.",
    "Nobody remembered who had left the umbrella in the waiting room.",
    "The children built a sandcastle with towers, a moat and a tiny flag.",
    "Our neighbours are planning a trip across the desert in an old van.",
    "I think the soup needs a little more salt and a squeeze of lemon.",
    "Every winter the lake freezes and people skate on it until March.",
    "The professor spoke so quickly that nobody could write anything down.",
    "There is a strange noise coming from the engine when it is cold.",
    "They found a box of letters in the attic, written more than a century ago.",
    "If the weather is good tomorrow, we will climb to the top of the hill.",
    "The market square fills with musicians and jugglers every Saturday.",
    "He forgot his keys again and had to wait for an hour in the rain.",
    "The new bridge will connect the two halves of the town for the first time.",
    "She ordered a cup of tea, a slice of cake and a glass of water.",
    "The old clock in the hall strikes thirteen times at midnight.",
    "We need three more chairs, a longer table and something to eat.",
    "The fishermen came back early because the waves were too high.",
    "When the bell rang, the students rushed out into the sunny yard.",
    "A thin layer of snow covered the roofs and the parked cars.",
    "My grandfather repairs watches in a tiny shop behind the station.",
    "The recipe says to bake the bread for forty minutes at a high heat.",
    "Can you hear the owls calling to each other in the dark woods?",
    "The museum is closed on Mondays, but the garden is open every day.",
    "We painted the kitchen yellow and hung new curtains by the window.",
    "The pilot announced that we would land twenty minutes ahead of time.",
    "Two cyclists stopped at the fountain to fill their water bottles.",
    "The shop assistant wrapped the present in red paper with a gold ribbon.",
    "After dinner we sat on the porch and watched the stars come out.",
    "The river flooded the fields twice last spring and ruined the crops.",
    "Someone has to feed the cat while we are away for the weekend.",
    "The doctor told him to drink more water and to walk every morning.",
    "Her first novel is about a lighthouse keeper and his three daughters.",
    "The kettle is boiling, so would anyone like some coffee or tea?",
    "They moved to a farmhouse with goats, chickens and a very old horse.",
    "It took the builders a whole month to finish the new roof.",
    "Let us meet at the corner cafe at half past ten and decide then.",
]

# English accents (en-us and en-gb listed twice: drawn twice as often); other languages' voices
# read the English sentences with their accent
ESPEAK_LANGUAGES = [
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
    "en-gb-x-gbcwmd", "en-us-nyc", "en-us", "en-gb", "de", "fr", "es", "it", "nl", "pt-br",
    "sv", "pl", "da", "af", "hi", "cy",
]  # fmt: skip
ESPEAK_VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt",
    "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "croak", "adam", "belinda", "benjamin",
    "caleb", "david", "ed", "edward", "john", "linda", "max", "michael", "paul", "quincy", "rob",
    "robert", "steph", "travis", "victor", "zac", "aunty", "grandma", "grandpa", "shelby",
    "norbert", "iven", "annie", "alicia", "andrea",
]  # fmt: skip
FLITE_VOICES = ["awb", "rms", "slt", "kal16"]


def _run(cmd: list[str]) -> bytes:
    try:
        return subprocess.run(cmd, check=True, capture_output=True).stdout
    except FileNotFoundError as err:
        raise SystemExit(
            f"{cmd[0]!r} not found: install it (Debian: apt-get install espeak-ng flite)"
        ) from err
    except subprocess.CalledProcessError as err:
        message = err.stderr.decode(errors="replace").strip()
        raise SystemExit(f"{' '.join(cmd[:3])} failed (exit {err.returncode}): {message}") from err


def synthesise(engine: str, voice: str, text: str, pitch: int, rate: int) -> tuple[np.ndarray, int]:
    """``(samples, sample_rate)`` of one utterance from the synthesiser's WAV output."""
    if engine == "espeak-ng":
        wav = _run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(rate), "--stdout", text])
    else:
        with tempfile.TemporaryDirectory() as folder:  # flite writes a file, not stdout
            tmp = Path(folder) / "utterance.wav"
            stretch = 165.0 / rate
            _run(["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}",
                  "-t", text, "-o", str(tmp)])  # fmt: skip
            wav = tmp.read_bytes()
    data, rate_hz = sf.read(io.BytesIO(wav), dtype="float64", always_2d=True)
    return data[:, 0], rate_hz


def clean(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    """Trim to the active part, resample to 16 kHz, remove DC, peak -3 dBFS.

    Raises:
        ValueError: if the utterance is silent (all zeros) or shorter than 10 ms.
    """
    frame = rate_hz // 100
    if len(samples) < frame or not np.any(samples):
        raise ValueError(f"the synthesised utterance is silent or empty ({len(samples)} samples)")
    n = len(samples) // frame
    energy = (samples[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-20
    active = np.flatnonzero(10 * np.log10(energy / energy.max()) > -40.0)
    margin = rate_hz // 20
    start = max(0, active[0] * frame - margin)
    stop = min(len(samples), (active[-1] + 1) * frame + margin)
    x = torch.from_numpy(samples[start:stop])
    if rate_hz != SAMPLE_RATE:
        x = change_speed(x, rate_hz / SAMPLE_RATE)
    x = x - x.mean()
    return (x / x.abs().max() * 10 ** (-3 / 20)).numpy()


def speakers(n_espeak: int, rng: random.Random) -> list[dict]:
    """The speaker list: ``n_espeak`` drawn espeak-ng voices, then the flite voices."""
    out, seen = [], set()
    while len(out) < n_espeak:
        lang, variant = rng.choice(ESPEAK_LANGUAGES), rng.choice(ESPEAK_VARIANTS)
        if (lang, variant) in seen:
            continue
        seen.add((lang, variant))
        pitch, rate = rng.randint(25, 80), rng.randint(140, 180)
        out.append({"engine": "espeak-ng", "voice": f"{lang}+{variant}", "pitch": pitch,
                    "rate": rate, "speaker": f"espeak-{lang}+{variant}-p{pitch}"})  # fmt: skip
    for voice in FLITE_VOICES:
        rate = rng.randint(150, 180)
        out.append({"engine": "flite", "voice": voice, "pitch": 0, "rate": rate,
                    "speaker": f"flite-{voice}"})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/tts_speech"))
    parser.add_argument("--espeak", type=int, default=44, help="espeak-ng speakers (44)")
    parser.add_argument("--sentences", type=int, default=6, help="utterances per speaker (6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        raise SystemExit(f"{str(args.out)!r} exists and is not a folder")
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise SystemExit(f"{str(args.out)!r} is not empty; pass --overwrite to replace it")
    if not 1 <= args.sentences <= len(SENTENCES):
        raise SystemExit(f"--sentences must be in [1, {len(SENTENCES)}], got {args.sentences}")
    combos = len(set(ESPEAK_LANGUAGES)) * len(ESPEAK_VARIANTS)
    if not 0 <= args.espeak <= combos:
        raise SystemExit(f"--espeak must be in [0, {combos}] (distinct voices), got {args.espeak}")
    rng = random.Random(args.seed)
    tmp = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    utterances, seconds = [], 0.0
    for i, spk in enumerate(speakers(args.espeak, rng)):
        for j, text in enumerate(rng.sample(SENTENCES, args.sentences)):
            samples, rate_hz = synthesise(
                spk["engine"], spk["voice"], text, spk["pitch"], spk["rate"]
            )
            audio = clean(samples, rate_hz)
            name = f"s{i:03d}_{j:02d}.flac"
            sf.write(tmp / name, audio, SAMPLE_RATE, subtype="PCM_16")
            seconds += len(audio) / SAMPLE_RATE
            utterances.append({"file": name, **spk, "text": text})
    (tmp / "manifest.json").write_text(
        json.dumps(
            {"sample_rate": SAMPLE_RATE, "seed": args.seed, "utterances": utterances}, indent=1
        )
        + "\n"  # fmt: skip
    )
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    n_spk = len({u["speaker"] for u in utterances})
    print(f"{len(utterances)} utterances, {n_spk} speakers, {seconds / 60:.1f} min -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
