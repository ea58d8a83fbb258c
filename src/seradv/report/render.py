"""A tiny document model rendered twice: Markdown (``report.md``) and HTML (``report.html``).

Both files are made from the same blocks, so they hold the same tables. The HTML is
self-contained: inline CSS, no script, no network; images are embedded as base64 (or linked
beside it), audio files are linked beside it and played with ``<audio>`` elements.

Every table carries a machine-readable description of what it shows (``meta``): in Markdown
an HTML comment before it, in HTML a ``data-meta`` attribute. Tests use it to check the
numbers against the results table.

Text comes partly from data (speaker, utterance and corpus names, parameters), so both
renderings escape every text: HTML with :func:`html.escape`; Markdown with HTML entities for
``& < >`` (no raw HTML can come from a name) and a backslash before the characters that would
make links, images, emphasis or code (:func:`md_escape`); the JSON of a table's ``meta`` has
``< > &`` as JSON unicode escapes so that a name cannot close its comment.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Heading", "Para", "Table", "Image", "AudioSet", "Bullets", "to_markdown", "to_html", "slug",
           "md_escape"]


def slug(text: str, n: int = 60) -> str:
    """A file- and anchor-safe name: lower case, ``a-z0-9`` and ``-``."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:n].strip("-") or "x"


@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""

    def __post_init__(self) -> None:
        self.anchor = self.anchor or slug(self.text)


@dataclass
class Para:
    text: str
    kind: str = ""
    """``""`` (plain), ``"note"`` or ``"warning"`` (highlighted)."""


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    meta: dict = field(default_factory=dict)


@dataclass
class Image:
    path: str
    """Relative to the report folder (e.g. ``figures/x.png``)."""
    caption: str


@dataclass
class AudioSet:
    title: str
    items: list[tuple[str, str]]
    """``(label, relative path)`` of each wav file."""
    caption: str = ""


Block = Heading | Para | Bullets | Table | Image | AudioSet


# ----------------------------------------------------------------------------- markdown


_MD_SPECIAL = re.compile(r"([\\`*_\[\]])")
_MD_LINE_START = re.compile(r"^(\s*)(?:([#>+=-])|(\d+)([.)]))")


def md_escape(text: str, *, block: bool = True) -> str:
    """Plain text for Markdown: ``& < >`` as entities, ``\\ ` * _ [ ]`` backslash-escaped,
    newlines as spaces and, for text that starts a block (``block``; not a table cell), a
    leading block marker (``#``, ``>``, ``-``, ``+``, ``=``, ``1.``) escaped."""
    s = html.escape(str(text).replace("\r", " ").replace("\n", " "), quote=False)
    s = _MD_SPECIAL.sub(r"\\\1", s)
    if not block:
        return s
    return _MD_LINE_START.sub(lambda m: m.group(1) + ("\\" + m.group(2) if m.group(2)
                                                      else m.group(3) + "\\" + m.group(4)), s)


def _md_cell(text: str) -> str:
    return md_escape(text, block=False).replace("|", "\\|")


def _meta_json(meta: dict) -> str:
    return (json.dumps(meta, sort_keys=True, ensure_ascii=False)
            .replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += [f"{'#' * b.level} {md_escape(b.text)}", ""]
        elif isinstance(b, Para):
            prefix = {"note": "> ", "warning": "> **Warning:** "}.get(b.kind, "")
            out += [prefix + md_escape(b.text), ""]
        elif isinstance(b, Bullets):
            out += [f"- {md_escape(t)}" for t in b.items] + [""]
        elif isinstance(b, Table):
            if b.caption:
                out += [f"**{md_escape(b.caption)}**", ""]
            if b.meta:
                out.append(f"<!-- table {_meta_json(b.meta)} -->")
            out.append("| " + " | ".join(_md_cell(c) for c in b.columns) + " |")
            out.append("|" + "|".join("---" for _ in b.columns) + "|")
            for r in b.rows:
                out.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{md_escape(b.caption)}]({_md_path(b.path)})", "", f"*{md_escape(b.caption)}*", ""]
        elif isinstance(b, AudioSet):
            links = " · ".join(f"[{md_escape(label)}]({_md_path(path)})" for label, path in b.items)
            out += [f"**{md_escape(b.title)}**: {links}", ""]
            if b.caption:
                out += [md_escape(b.caption), ""]
    return "\n".join(out).rstrip() + "\n"


def _md_path(path: str) -> str:
    """A relative link target: every character but ``A-Z a-z 0-9 . _ / -`` percent-encoded."""
    return re.sub(r"[^A-Za-z0-9._/-]", lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode()), str(path))


# ----------------------------------------------------------------------------- html

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.86em;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;white-space:nowrap}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
.note{background:#eef5ff;border-left:4px solid #4c72b0;padding:.4em .8em}
.warning{background:#fff1f0;border-left:4px solid #c44e52;padding:.4em .8em}
.caption{font-weight:600;margin-bottom:.2em}
.audio{display:flex;flex-wrap:wrap;gap:1em;margin:.4em 0 1em}.audio div{font-size:.85em}
audio{display:block;width:260px}
nav ul{columns:2;font-size:.9em}
"""


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _img_src(path: str, root: Path, embed: bool) -> str:
    if not embed:
        return _e(path)
    data = (root / path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def to_html(blocks: list[Block], *, title: str, root: Path, embed_images: bool = True) -> str:
    """The HTML page; ``root`` is the report folder (to embed images from)."""
    toc = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    body: list[str] = []
    nav = ("<nav><strong>Contents</strong><ul>" + "".join(
        f'<li><a href="#{_e(h.anchor)}">{_e(h.text)}</a></li>' for h in toc) + "</ul></nav>") if toc else ""
    for i, b in enumerate(blocks):
        # contents after the title, the summary and the intro
        if nav and (isinstance(b, Heading) and b.level == 2 and b.anchor != "summary"):
            body.append(nav)
            nav = ""
        if isinstance(b, Heading):
            body.append(f'<h{b.level} id="{_e(b.anchor)}">{_e(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            cls = f' class="{b.kind}"' if b.kind else ""
            body.append(f"<p{cls}>{_e(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_e(t)}</li>" for t in b.items) + "</ul>")
        elif isinstance(b, Table):
            if b.caption:
                body.append(f'<div class="caption">{_e(b.caption)}</div>')
            meta = f" data-meta='{_e(json.dumps(b.meta, sort_keys=True))}'" if b.meta else ""
            head = "".join(f"<th>{_e(c)}</th>" for c in b.columns)
            rows = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            body.append(f"<table{meta}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            body.append(f'<figure><img src="{_img_src(b.path, root, embed_images)}" alt="{_e(b.caption)}">'
                        f"<figcaption>{_e(b.caption)}</figcaption></figure>")
        elif isinstance(b, AudioSet):
            items = "".join(
                f'<div>{_e(label)}<audio controls preload="none" src="{_e(path)}"></audio></div>'
                for label, path in b.items)
            cap = f"<p>{_e(b.caption)}</p>" if b.caption else ""
            body.append(f'<div class="caption">{_e(b.title)}</div><div class="audio">{items}</div>{cap}')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body) + "\n</body></html>\n"
    )
