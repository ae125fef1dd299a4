"""Rebuilds the emoji image-text corpus: `emoji.png` (a sprite sheet) and `emoji.tsv.xz`.

Every emoji of the npm package `emoji-datasource-google` 16.0.0 (its `emoji.json`, base
forms only: no skin-tone variants), in the package's `sort_order`, becomes:
  * a `TILE x TILE` RGB tile of the sheet (row-major, `COLUMNS` tiles a row): the 64 px
    Noto Color Emoji image laid on white, then each 2x2 block of pixels averaged;
  * a TSV line `index codepoints category subcategory name captions`. The name is CLDR's
    spoken name (`type="tts"` in `annotations/en.xml` or `annotationsDerived/en.xml`), else
    the package's name lowercased (emoji newer than CLDR 41). The captions, joined by
    `SEPARATOR`, are the name, the package's name lowercased, CLDR's keywords joined by ", "
    ("dog, face, pet") and the package's short names with "_" and "-" as spaces, in that
    order; repeats (ignoring case) are left out, and so is any caption but the name that
    another emoji has too ("flag", "keycap"), so that each caption points at one image.

    npm pack emoji-datasource-google@16.0.0 && tar xzf emoji-datasource-google-16.0.0.tgz
    apt-get install unicode-cldr-core
    python jaxformer/data/assets/emoji/make_corpus.py package \
        /usr/share/unicode/cldr/common
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import lzma
import pathlib
import re
import xml.etree.ElementTree as ElementTree

import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).parent
TILE = 32
COLUMNS = 64
SOURCE_SIZE = 64
SEPARATOR = " | "
HEADER = ("index", "codepoints", "category", "subcategory", "name", "captions")
SHA256 = {  # Of the inputs this corpus was made from.
    "emoji.json": "1d602e65be88772bf8cc368ce16b855d719eeddbafe128d471b80203f494d29f",
    "annotations/en.xml": "170a989b9aff71fd06b9f7bbd70aa3b4a3d228e15fa734692d4fc80206e536e1",
    "annotationsDerived/en.xml":
        "0fab943b22dd1197b6d6fe6ce6aec7968e925d547283484bddcf96b14daf657f",
}
_VARIATION_SELECTOR = "\ufe0f"
_SHORT_NAME_SPACES = re.compile(r"[_-]+")


def read_checked(path: pathlib.Path, key: str) -> bytes:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[key]:
        raise ValueError(f"{path} has sha256 {digest}, expected {SHA256[key]}")
    return data


def read_cldr(cldr: pathlib.Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(emoji -> spoken name, emoji -> keywords) of CLDR's English annotations, the base file
    first (emoji without U+FE0F, as CLDR writes them)."""
    names: dict[str, str] = {}
    keywords: dict[str, list[str]] = {}
    for key in ("annotations/en.xml", "annotationsDerived/en.xml"):
        root = ElementTree.fromstring(read_checked(cldr / key, key))
        for annotation in root.iter("annotation"):
            cp, text = annotation.get("cp"), (annotation.text or "").strip()
            if annotation.get("type") == "tts":
                names.setdefault(cp, text)
            else:
                keywords.setdefault(cp, [k.strip() for k in text.split("|") if k.strip()])
    return names, keywords


def emoji_text(unified: str) -> str:
    """"1F436" -> the emoji's characters, without variation selectors (CLDR's keys)."""
    return "".join(chr(int(c, 16)) for c in unified.split("-")).replace(_VARIATION_SELECTOR, "")


def candidate_captions(entry: dict, names: dict[str, str], keywords: dict[str, list[str]]
                       ) -> list[str]:
    """The emoji's name, then its other captions, without repeats (ignoring case)."""
    key = emoji_text(entry["unified"])
    package_name = entry["name"].lower()
    candidates = [names.get(key, package_name), package_name]
    if keywords.get(key):
        candidates.append(", ".join(keywords[key]))
    candidates += [_SHORT_NAME_SPACES.sub(" ", n).strip() for n in entry["short_names"]]
    captions: list[str] = []
    for caption in candidates:
        if caption and caption.lower() not in {c.lower() for c in captions}:
            captions.append(caption)
    return captions


def corpus_rows(entries: list[dict], names: dict[str, str], keywords: dict[str, list[str]]
                ) -> list[tuple[str, ...]]:
    """One row per emoji (see HEADER), in `sort_order`."""
    entries = sorted(entries, key=lambda e: e["sort_order"])
    captions = [candidate_captions(e, names, keywords) for e in entries]
    owners = collections.Counter(c.lower() for group in captions for c in group)
    rows = []
    for index, (entry, group) in enumerate(zip(entries, captions, strict=True)):
        kept = [group[0]] + [c for c in group[1:] if owners[c.lower()] == 1]
        for text in kept:
            if "|" in text or "\t" in text or "\n" in text:
                raise ValueError(f"caption {text!r} holds a separator")
        rows.append((str(index), entry["unified"], entry["category"], entry["subcategory"],
                     kept[0], SEPARATOR.join(kept)))
    row_names = collections.Counter(row[4].lower() for row in rows)
    repeated = [name for name, count in row_names.items() if count > 1]
    if repeated:
        raise ValueError(f"names of more than one emoji: {repeated}")
    return rows


def tile(path: pathlib.Path) -> np.ndarray:
    """uint8 `[TILE, TILE, 3]`: the RGBA image laid on white, 2x2 blocks averaged."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    if rgba.size != (SOURCE_SIZE, SOURCE_SIZE):
        raise ValueError(f"{path} is {rgba.size}, expected {SOURCE_SIZE} px square")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    return np.asarray(rgb.reduce(SOURCE_SIZE // TILE))


def sprite_sheet(tiles: list[np.ndarray]) -> np.ndarray:
    """The tiles in rows of `COLUMNS`, the last row's empty places white."""
    rows = -(-len(tiles) // COLUMNS)
    sheet = np.full((rows * TILE, COLUMNS * TILE, 3), 255, np.uint8)
    for i, pixels in enumerate(tiles):
        y, x = divmod(i, COLUMNS)
        sheet[y * TILE:(y + 1) * TILE, x * TILE:(x + 1) * TILE] = pixels
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=pathlib.Path,
                        help="the emoji-datasource-google folder (emoji.json, img/)")
    parser.add_argument("cldr", type=pathlib.Path,
                        help="CLDR's common/ folder (annotations/, annotationsDerived/)")
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    args = parser.parse_args(argv)
    entries = json.loads(read_checked(args.package / "emoji.json", "emoji.json"))
    names, keywords = read_cldr(args.cldr)
    rows = corpus_rows(entries, names, keywords)
    by_code = {e["unified"]: e for e in entries}
    images = args.package / "img" / "google" / str(SOURCE_SIZE)
    sheet = sprite_sheet([tile(images / by_code[row[1]]["image"]) for row in rows])
    Image.fromarray(sheet).save(args.out / "emoji.png", optimize=True)
    text = "\n".join("\t".join(row) for row in [HEADER, *rows]) + "\n"
    data = text.encode("utf-8")
    (args.out / "emoji.tsv.xz").write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    captions = [row[5].split(SEPARATOR) for row in rows]
    print(f"{len(rows)} emoji, {sum(map(len, captions))} captions, "
          f"{len({row[3] for row in rows})} subcategories, from CLDR: "
          f"{sum(emoji_text(row[1]) in names for row in rows)}")
    print("captions per emoji:", dict(sorted(collections.Counter(map(len, captions)).items())))
    print("sha256 of the TSV:", hashlib.sha256(data).hexdigest())
    print("sha256 of the pixels:", hashlib.sha256(sheet.tobytes()).hexdigest(), sheet.shape)


if __name__ == "__main__":
    main()
