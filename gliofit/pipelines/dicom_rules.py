"""Which MR series is T1, T1c, T2 or FLAIR: a rule table over DICOM headers, and what to skip.

Skipped first (:func:`skip_reason`): localisers (ImageType LOCALIZER, or a description such as
"localizer", "scout", "survey"), derived images (ImageType DERIVED or SECONDARY, reformats, maps,
subtractions), non-MR series. Then the first matching row of :data:`RULES` names the modality;
a series matching no row is listed as "unrecognised". The table is documented in docs/clinical.md.

Rows test the lower-cased SeriesDescription + ProtocolName (``text``), ScanningSequence (``seq``),
InversionTime (``ti_ms``), EchoTime (``te_ms``), RepetitionTime (``tr_ms``) and the Contrast/Bolus
Agent tag (0018,0010) (``contrast``: present and not "none"/"no").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Rule", "RULES", "header_facts", "skip_reason", "classify"]


@dataclass(frozen=True)
class Rule:
    """One row of the table: the modality it names, why (as written in import.json), and the test."""

    modality: str
    reason: str
    test: Callable[[dict], bool]


def _has(pattern: str) -> Callable[[dict], bool]:
    rx = re.compile(pattern)
    return lambda f: bool(rx.search(f["text"]))


_FLAIR_TEXT = r"flair|t2f\b|t2[-_ ]?fl|dark[-_ ]?fluid|tirm"
_POST_TEXT = r"\+\s*c\b|\+c\b|\bpost\b|\bgd\b|gad|contrast|\bce\b|t1c\b|t1ce|\+gd|kontrast"
_PRE_TEXT = r"\bpre\b|native|nativ|\bnon[-_ ]?contrast"
_T1_TEXT = r"t1|mprage|mp[-_ ]?rage|spgr|tfl|bravo|flash"
_T2_TEXT = r"t2|tse|fse|haste"


def _is_flair_by_sequence(f: dict) -> bool:
    return "IR" in f["seq"] and f["ti_ms"] is not None and f["ti_ms"] >= 1500 and (f["te_ms"] or 0) >= 60


def _is_t1_text(f: dict) -> bool:
    return bool(re.search(_T1_TEXT, f["text"])) and not re.search(_FLAIR_TEXT, f["text"])


RULES: tuple[Rule, ...] = (
    Rule("flair", "description names FLAIR", _has(_FLAIR_TEXT)),
    Rule("flair", "inversion recovery with TI >= 1500 ms and TE >= 60 ms", _is_flair_by_sequence),
    Rule(
        "t1c",
        "T1 description and the contrast-agent tag (0018,0010)",
        lambda f: _is_t1_text(f) and f["contrast"] and not re.search(_PRE_TEXT, f["text"]),
    ),
    Rule(
        "t1c",
        "T1 description names contrast (post, +C, Gd)",
        lambda f: _is_t1_text(f) and bool(re.search(_POST_TEXT, f["text"])) and not re.search(_PRE_TEXT, f["text"]),
    ),
    Rule("t1", "T1 description, no contrast agent", lambda f: _is_t1_text(f) and not f["contrast"]),
    Rule("t1", "T1 description names pre-contrast", lambda f: _is_t1_text(f) and bool(re.search(_PRE_TEXT, f["text"]))),
    Rule("t2", "description names T2", lambda f: bool(re.search(_T2_TEXT, f["text"]))),
    Rule(
        "t2",
        "TE >= 80 ms and TR >= 2000 ms without inversion",
        lambda f: (f["te_ms"] or 0) >= 80 and (f["tr_ms"] or 0) >= 2000 and "IR" not in f["seq"],
    ),
    Rule(
        "t1",
        "TE <= 20 ms and TR <= 1000 ms, no contrast agent",
        lambda f: 0 < (f["te_ms"] or 0) <= 20 and 0 < (f["tr_ms"] or 0) <= 1000 and not f["contrast"],
    ),
    Rule(
        "t1c",
        "TE <= 20 ms and TR <= 1000 ms with the contrast-agent tag",
        lambda f: 0 < (f["te_ms"] or 0) <= 20 and 0 < (f["tr_ms"] or 0) <= 1000 and f["contrast"],
    ),
)
"""The modality rules, tried in order; the first match wins."""

_LOCALISER_TEXT = re.compile(r"locali[sz]er|\bloc\b|scout|survey|3[-_ ]?plane|tripilot|aahead")
_DERIVED_TEXT = re.compile(r"\bmpr\b|\bmip\b|reformat|\badc\b|trace|\bfa\b|subtract|\bsub\b|perfusion map")


def _float(ds, name: str) -> float | None:
    v = ds.get(name)
    try:
        return float(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def header_facts(ds) -> dict:
    """The header values the rules read, from one slice's pydicom dataset."""
    text = " ".join(str(ds.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName")).lower()
    seq = ds.get("ScanningSequence", "")
    seq = seq if isinstance(seq, str) else "\\".join(str(v) for v in seq)
    agent = str(ds.get("ContrastBolusAgent", "") or "").strip().lower()
    return {
        "text": text,
        "seq": seq.upper(),
        "ti_ms": _float(ds, "InversionTime"),
        "te_ms": _float(ds, "EchoTime"),
        "tr_ms": _float(ds, "RepetitionTime"),
        "contrast": agent not in ("", "none", "no", "n/a", "0"),
    }


def skip_reason(ds) -> str | None:
    """Why a series is not a candidate (``localiser``, ``derived``, ``not MR``), or None."""
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    text = " ".join(str(ds.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName")).lower()
    if "LOCALIZER" in image_type or _LOCALISER_TEXT.search(text):
        return "localiser"
    if str(ds.get("Modality", "")) != "MR":
        return f"not MR ({ds.get('Modality', '?')})"
    if image_type[:1] == ["DERIVED"] or "SECONDARY" in image_type[1:2] or _DERIVED_TEXT.search(text):
        return "derived"
    return None


def classify(ds) -> tuple[str | None, str]:
    """(modality, reason) of a series from its first slice's header; (None, "unrecognised") if no rule fits."""
    facts = header_facts(ds)
    for rule in RULES:
        if rule.test(facts):
            return rule.modality, rule.reason
    return None, "unrecognised"
