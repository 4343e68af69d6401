"""The ``--objectives`` mini-language of the ``xlm`` task.

``"mlm:en,de,fr tlm:de-en,fr-en@0.5 clm:en"``: space-separated entries, each
``OBJECTIVE:LANGS[@WEIGHT]`` where LANGS are languages (mlm, clm) or pairs
(tlm). ``mlm`` alone means every monolingual language of the data directory,
``tlm`` alone every pair. Checked against the data directory's manifest at
start-up so that a typo fails before any model is built.
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence

KINDS = {"mlm": "monolingual", "clm": "monolingual", "tlm": "parallel"}
_ENTRY = re.compile(r"^(?P<kind>[a-z]+)(?::(?P<keys>[^@]*))?(?:@(?P<weight>[^@]+))?$")


@dataclass(frozen=True)
class Objective:
    kind: str  # mlm | clm | tlm
    keys: tuple  # languages, or pairs "src-tgt" for tlm
    weight: float = 1.0

    def languages(self) -> List[str]:
        if self.kind != "tlm":
            return list(self.keys)
        return sorted({lang for pair in self.keys for lang in pair.split("-")})


class ObjectiveError(ValueError):
    pass


def parse_objectives(
    spec: str, mono_langs: Sequence[str], pairs: Sequence[str], where: str = "--objectives"
) -> List[Objective]:
    entries = spec.split() if spec.strip() else ["mlm"]
    seen: Dict[str, Objective] = {}
    for entry in entries:
        m = _ENTRY.match(entry)
        if not m or m.group("kind") not in KINDS:
            raise ObjectiveError(
                f"{where}: cannot parse {entry!r}; expected OBJECTIVE[:LANGS][@WEIGHT] "
                f"with OBJECTIVE one of {sorted(KINDS)}, e.g. 'mlm:en,de tlm:de-en@0.5'"
            )
        kind = m.group("kind")
        if kind in seen:
            raise ObjectiveError(f"{where}: objective {kind!r} is given twice; list all its languages once")
        available = list(pairs if kind == "tlm" else mono_langs)
        what = "language pairs" if kind == "tlm" else "monolingual languages"
        keys = tuple(k for k in (m.group("keys") or "").split(",") if k) or tuple(available)
        if not keys:
            raise ObjectiveError(f"{where}: {kind!r} needs {what}, but the data directory has none")
        for key in keys:
            if key not in available:
                raise ObjectiveError(
                    f"{where}: {kind}:{key} is not in the data directory; its {what} are: "
                    f"{', '.join(available) or '(none)'}"
                )
        try:
            weight = float(m.group("weight")) if m.group("weight") else 1.0
        except ValueError:
            raise ObjectiveError(f"{where}: weight in {entry!r} is not a number") from None
        if weight <= 0:
            raise ObjectiveError(f"{where}: weight in {entry!r} must be > 0")
        seen[kind] = Objective(kind, keys, weight)
    return list(seen.values())
