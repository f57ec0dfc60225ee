"""A small registry used by the tests of the registry tool (written to tmp_path by each test)."""
from __future__ import annotations

from pathlib import Path

SAMPLE = """\
# a small registry for the tests
schema_version: 1
people:
  alice:
    name: A. Alice
    wp: DATA
  bob:
    name: B. Bob
    wp: COM-CCF
  carol:
    name: C. Carol
    wp: DATA
icds:
  DATA-COM:
    title: ICD DATA-COM
    version: "1.0"
    date: 2026-11-25
    status: ready for activation
    scope: Atmosphere and array calibration.
    responsibles:
      - {person: alice, role: DATA}
      - {person: bob, role: COM-CCF}
  DATA-xST:
    title: ICD DATA-xST
    version: "0.1"
    date: 2026-11-25
    status: under definition
    responsibles:
      - {person: alice, role: DATA}
      - {person: null, role: xSTs, note: to be decided}
    contributors:
      - {person: carol, role: implementation}
  DATA-ACTL:
    title: ICD DATA-ACTL
    version: "0.1"
    date: 2026-11-25
    status: placeholder
interfaces:
  - code: I-DATA-COM-0006
    icd: DATA-COM
    title: "CTC, Cherenkov Transparency Coefficient"
    category: atmosphere
    level: per telescope
    description: >-
      Atmospheric transmission from the Cherenkov light of showers.
    pipeline_levels: [B, C]
    provided_by:
      - {person: bob, wp: COM-CCF}
      - {person: carol, wp: DATA, subproject: PIPE-Cal}
    related: [I-DATA-COM-3201]
  - code: I-DATA-COM-3201
    icd: DATA-COM
    title: "CTC implementation"
    category: atmosphere
    level: per telescope
    pipeline_levels: [B, C]
    provided_by:
      - {person: carol, wp: DATA, subproject: PIPE-Cal}
    tasks:
      - id: 8529
        subject: Develop CTC algorithms
        role: upstream
        status: New
        start: 2015-06-01
        due: 2016-07-01
      - id: 8546
        subject: Implementation of CTC algorithms
        role: parent
        stage: algorithms
        status: Assigned
        start: 2017-04-01
        due: 2020-04-01
        estimated_hours: 1267
        relations:
          - {type: follows, task: 8529, delay: 30}
      - id: 11108
        subject: Integrate algorithms in DATA
        stage: integration
        parent: 8546
        status: In Progress
        assignee: carol
        estimated_hours: 40
        spent_hours: 12.5
        due: 2030-01-01
  - code: PROV-DATA-COM-ATM-SELECTION
    icd: DATA-COM
    title: "Data selection using atmospheric parameters"
    category: atmosphere
    level: per site
    tasks:
      - subject: Select good-time intervals
        stage: feedback
        status: New
  - code: I-DATA-xST-0106
    icd: DATA-xST
    title: "ADC/p.e. ratio determination"
    category: camera
    level: per pixel
    pipeline_levels: [A, B, C]
    tasks:
      - id: 20001
        subject: Feedback on the flat-field hardware
        stage: feedback
        status: Closed
        assignee: alice
      - id: 20002
        subject: F-factor implementation
        stage: algorithms
        status: Resolved
        assignee: carol
        estimated_hours: 80
        spent_hours: 90
  - code: I-DATA-xST-1005
    icd: DATA-xST
    title: "Optical PSF characterisation"
    category: pointing
    level: per telescope
"""

CODES = ("I-DATA-COM-0006", "I-DATA-COM-3201", "PROV-DATA-COM-ATM-SELECTION", "I-DATA-xST-0106", "I-DATA-xST-1005")


def write(folder: Path, text: str = SAMPLE, name: str = "interfaces.yaml") -> Path:
    path = Path(folder) / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the ``occurrence``-th line containing ``needle``."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in the text")
