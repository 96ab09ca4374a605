"""Does a vocabulary make the recogniser hear a team's names? With and without `start.vocabulary`.

espeak-ng reads sentences holding unusual names (clients, products, colleagues), in English
(Whisper tiny.en, the default model) and in French (Whisper base). Each sentence is transcribed as
one final (language given, greedy), once without a prompt and once with the prompt a session
with the sentence's names as its vocabulary gets (`stream.vocabulary.vocabulary_prompt`), and the
script prints, per language and per condition:

* names heard: the share of the names written exactly as listed (words compared case- and
  accent-insensitively, `stream.language.words`);
* rest WER: the WER of the sentence without its names (the name words are taken out of the
  reference, and out of the hypothesis where heard), so a vocabulary must not cost other words;
* WER: of the whole sentence.

    python -m bench.vocabulary [--languages en fr] [--threads 2] [--speed 150] [--show]

Each sentence's transcripts are printed with ``--show``.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import wave
from dataclasses import dataclass

import numpy as np
import soxr

from bench.common import WordErrors, command_line, rounded
from models.registry import load_asr
from stream.interfaces import SAMPLE_RATE, AsrInput, Audio
from stream.language import words
from stream.vocabulary import vocabulary_prompt


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str
    names: tuple[str, ...]


SENTENCES: dict[str, tuple[str, str, tuple[Sentence, ...]]] = {
    # language: (model, espeak-ng voice, sentences)
    "en": ("tiny.en", "en-us", (
        Sentence("Our competitor Zyphrex opened an office in Lyon, and Kessandra Vollmer will lead "
                 "the Palabre rollout.", ("Zyphrex", "Kessandra Vollmer", "Palabre")),
        Sentence("Please send the Quorvane contract to Dmitra Okonkwo before Friday.",
                 ("Quorvane", "Dmitra Okonkwo")),
        Sentence("The Velloria dashboard was rebuilt by Tobiah Renwick last week.",
                 ("Velloria", "Tobiah Renwick")),
        Sentence("Ysolde Marchetti asked whether Brantwick can host the training in May.",
                 ("Ysolde Marchetti", "Brantwick")),
        Sentence("We signed with Korvessa Logistics, and Anouk Delacroix-Haines is our contact.",
                 ("Korvessa", "Anouk Delacroix-Haines")),
    )),
    "fr": ("base", "fr", (
        Sentence("Notre concurrent Zyphrex a ouvert un bureau à Lyon, et Kessandra Vollmer pilotera "
                 "le déploiement de Palabre.", ("Zyphrex", "Kessandra Vollmer", "Palabre")),
        Sentence("Envoyez le contrat Quorvane à Dmitra Okonkwo avant vendredi.",
                 ("Quorvane", "Dmitra Okonkwo")),
        Sentence("Le tableau de bord Velloria a été refait par Tobiah Renwick la semaine dernière.",
                 ("Velloria", "Tobiah Renwick")),
        Sentence("Ysolde Marchetti demande si Brantwick peut accueillir la formation en mai.",
                 ("Ysolde Marchetti", "Brantwick")),
        Sentence("Nous avons signé avec Korvessa Logistique, et Anouk Delacroix est notre contact.",
                 ("Korvessa", "Anouk Delacroix")),
    )),
}


def espeak(text: str, voice: str, speed: int) -> Audio:
    """espeak-ng speech of `text`, 16 kHz mono float32."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                         capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return np.asarray(soxr.resample(pcm.astype(np.float32) / 32768, rate, SAMPLE_RATE), dtype=np.float32)


def heard(name: str, hypothesis: str) -> bool:
    """Whether the words of `name` appear in a row in `hypothesis` (case- and accent-insensitive)."""
    said, wanted = words(hypothesis), words(name)
    return any(said[i : i + len(wanted)] == wanted for i in range(len(said) - len(wanted) + 1))


def without_names(text: str, names: tuple[str, ...]) -> str:
    """`text` as words, the words of `names` left out."""
    name_words = {w for name in names for w in words(name)}
    return " ".join(w for w in words(text) if w not in name_words)


def measure(language: str, threads: int, speed: int, show: bool) -> dict[str, object]:
    model, voice, sentences = SENTENCES[language]
    engine = load_asr(model, device="cpu", cpu_threads=threads)
    audios = [espeak(s.text, voice, speed) for s in sentences]
    figures: dict[str, object] = {"language": language, "model": model, "voice": voice,
                                  "sentences": len(sentences)}
    for condition in ("without", "with"):
        prompts = [vocabulary_prompt(s.names) if condition == "with" else None for s in sentences]
        inputs = [AsrInput(a, language, prompt=p) for a, p in zip(audios, prompts, strict=True)]
        outputs = engine.transcribe_batch(inputs)
        names = found = 0
        rest, whole = WordErrors(), WordErrors()
        for sentence, output in zip(sentences, outputs, strict=True):
            names += len(sentence.names)
            found += sum(heard(name, output.text) for name in sentence.names)
            rest.add(without_names(sentence.text, sentence.names), without_names(output.text, sentence.names))
            whole.add(" ".join(words(sentence.text)), " ".join(words(output.text)))
            if show:
                print(f"[{language} {condition}] {output.text}")
        figures[condition] = {"names_heard": f"{found}/{names}", "names_share": rounded(found / names),
                              "rest_wer": rounded(rest.wer), "wer": rounded(whole.wer)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--languages", nargs="+", default=["en", "fr"], choices=sorted(SENTENCES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed", type=int, default=150, help="espeak-ng words per minute")
    parser.add_argument("--show", action="store_true", help="print every transcript")
    args = parser.parse_args()
    results = [measure(language, args.threads, args.speed, args.show) for language in args.languages]
    print(json.dumps({"command": command_line(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
