"""Rebuilds `austen.tsv.xz` and `plays.tsv`, the book corpus's own files.

`austen.tsv.xz`: Jane Austen's six novels from the installed R package janeaustenr (Debian
`r-cran-janeaustenr`), one paragraph a line: `book TAB chapter TAB paragraph`. `plays.tsv`:
where each play starts in the embedded Shakespeare corpus (`../shakespeare/input.txt`), from
the per-play character counts in that corpus's PROVENANCE.md, checked to tile it exactly.

Needs `rdata` (pip install rdata) to read R's lazy-load database; the package is not a
dependency of jaxformer.
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import pathlib
import re
import zlib

HERE = pathlib.Path(__file__).parent
JANEAUSTENR = pathlib.Path("/usr/lib/R/site-library/janeaustenr/data")
# janeaustenr's variable names and the books' titles, in publication order.
NOVELS = (
    ("sensesensibility", "Sense and Sensibility"),
    ("prideprejudice", "Pride and Prejudice"),
    ("mansfieldpark", "Mansfield Park"),
    ("emma", "Emma"),
    ("northangerabbey", "Northanger Abbey"),
    ("persuasion", "Persuasion"),
)
_CHAPTER = re.compile(r"chapter [0-9ivxlc]+", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
_VOLUME = re.compile(r"VOLUME [IVX]+")
_ENDS = ("THE END", "FINIS", "Finis", "A NOTE ON THE TEXT")
_PLAY_ROW = re.compile(r"^\| (.+?) \| `.+?` \| [\d,]+ \| ([\d,]+) \|$", re.MULTILINE)


def read_novels(folder: pathlib.Path) -> dict[str, list[str]]:
    """Each novel's lines, from R's lazy-load database `Rdata.rdx` / `Rdata.rdb`."""
    import rdata  # Only needed here.

    def parse(data: bytes):
        return rdata.conversion.convert(rdata.parser.parse_data(data))

    index = parse(gzip.decompress((folder / "Rdata.rdx").read_bytes()))
    database = (folder / "Rdata.rdb").read_bytes()
    novels = {}
    for name, (offset, length) in index["variables"].items():
        # Each object is a 4-byte length, then the zlib-compressed serialized object.
        lines = parse(zlib.decompress(database[offset + 4:offset + length]))
        novels[str(name)] = [str(line) for line in lines]
    return novels


def chapters(lines: list[str]) -> list[list[str]]:
    """The paragraphs of each chapter: the title pages, "VOLUME" headings and the closing
    "THE END" (and the editor's note after Northanger Abbey) are left out."""
    result: list[list[str]] = []
    paragraph: list[str] = []

    def end_paragraph():
        if paragraph and result:
            result[-1].append(" ".join(paragraph))
        paragraph.clear()

    for line in lines:
        line = line.strip()
        if line in _ENDS:
            break
        if _CHAPTER.fullmatch(line):
            end_paragraph()
            result.append([])
        elif not line or _VOLUME.fullmatch(line):
            end_paragraph()
        else:
            paragraph.append(line)
    end_paragraph()
    return result


def austen_tsv(novels: dict[str, list[str]]) -> str:
    rows = ["book\tchapter\tparagraph"]
    for name, title in NOVELS:
        for number, paragraphs in enumerate(chapters(novels[name]), start=1):
            rows += [f"{title}\t{number}\t{_SPACES.sub(' ', p)}" for p in paragraphs]
    return "\n".join(rows) + "\n"


def plays_tsv(corpus: str, provenance: str) -> str:
    """`title TAB first character TAB characters` of each play in the Shakespeare corpus,
    whose plays are separated by a blank line."""
    rows, start = ["title\tstart\tcharacters"], 0
    for title, count in _PLAY_ROW.findall(provenance):
        count = int(count.replace(",", ""))
        play = corpus[start:start + count]
        last = start + count + 1 == len(corpus)
        after = corpus[start + count:start + count + 2]
        if not re.match(r"[^\n]+:\n", play) or after != ("\n" if last else "\n\n"):
            raise ValueError(f"{title} is not at characters {start}..{start + count}")
        rows.append(f"{title}\t{start}\t{count}")
        start += count + 2
    if start != len(corpus) + 1:
        raise ValueError(f"the plays cover {start - 1} characters, the corpus has {len(corpus)}")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--janeaustenr", type=pathlib.Path, default=JANEAUSTENR)
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    args = parser.parse_args(argv)
    text = austen_tsv(read_novels(args.janeaustenr)).encode("utf-8")
    (args.out / "austen.tsv.xz").write_bytes(lzma.compress(text, preset=9 | lzma.PRESET_EXTREME))
    shakespeare = HERE.parent / "shakespeare"
    plays = plays_tsv((shakespeare / "input.txt").read_text("utf-8"),
                      (shakespeare / "PROVENANCE.md").read_text("utf-8"))
    (args.out / "plays.tsv").write_text(plays, encoding="utf-8")


if __name__ == "__main__":
    main()
