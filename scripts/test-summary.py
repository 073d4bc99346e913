"""Print one closing line over the pytest and Surefire JUnit reports: 'N passed, N failed, N skipped'."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

passed = failed = skipped = 0
files = [Path(p) for p in sys.argv[1:] if Path(p).is_file()]
files += sorted(Path("target/surefire-reports").glob("TEST-*.xml"))
for path in files:
    root = ET.parse(path).getroot()  # noqa: S314 - our own test reports
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    for s in suites:
        tests, fail = int(s.get("tests", 0)), int(s.get("failures", 0)) + int(s.get("errors", 0))
        skip = int(s.get("skipped", 0))
        passed += tests - fail - skip
        failed += fail
        skipped += skip
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
