"""Validates OCSF events (one JSON object per line on stdin) with third-party
validators from PyPI:

- py-ocsf-models (DetectionFinding, OCSF 1.x Pydantic models): required attributes,
  enums and types of the finding class;
- pydantic-ocsf (every class and object of the OCSF 1.7.0 schema it ships, the
  newest it has; 1.8.0 only adds to it): nested objects
  (process, parent_process, device, evidences, endpoints...) are validated too, and
  any attribute the schema does not know is an error unless it sits under `unmapped`.

Exit status 0 when every event passes; 1 with one line per problem otherwise.
"""

import json
import sys

from pydantic import BaseModel
from py_ocsf_models.events.findings.detection_finding import DetectionFinding as PyOcsfDetectionFinding
from ocsf.v1_7_0 import events as ocsf_events


def unknown_attributes(model, path="$"):
    """Attributes pydantic-ocsf kept as extras: names the schema does not define."""
    found = []
    if not isinstance(model, BaseModel):
        if isinstance(model, list):
            for i, item in enumerate(model):
                found += unknown_attributes(item, f"{path}[{i}]")
        return found
    for name in (model.model_extra or {}):
        found.append(f"{path}.{name}")
    for name in type(model).model_fields:
        if name == "unmapped":
            continue
        found += unknown_attributes(getattr(model, name), f"{path}.{name}")
    return found


CLASSES = {
    2004: ("DetectionFinding", True),
    1007: ("ProcessActivity", False),
    4001: ("NetworkActivity", False),
}


def check(event):
    problems = []
    cls = event.get("class_uid")
    if cls not in CLASSES:
        return [f"class_uid {cls!r} is not one mcpwatch emits"]
    name, py_ocsf = CLASSES[cls]
    if event.get("metadata", {}).get("version") != "1.8.0":
        problems.append("metadata.version is not 1.8.0")
    if event.get("type_uid") != cls * 100 + event.get("activity_id", -1):
        problems.append("type_uid != class_uid * 100 + activity_id")
    if py_ocsf:
        try:
            PyOcsfDetectionFinding.model_validate(event)
        except Exception as e:  # pydantic.ValidationError
            problems.append(f"py-ocsf-models: {e}")
    try:
        model = getattr(ocsf_events, name).model_validate(event)
        problems += [f"unknown attribute {p}" for p in unknown_attributes(model)]
    except Exception as e:
        problems.append(f"pydantic-ocsf: {e}")
    return problems


def main():
    failed = 0
    n = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        n += 1
        event = json.loads(line)
        for p in check(event):
            failed += 1
            uid = event.get("finding_info", {}).get("uid") or event.get("metadata", {}).get("uid")
            print(f"event {n} ({uid}): {p}")
    if n == 0:
        print("no events to validate")
        return 1
    print(f"{n} events validated, {failed} problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
