"""One benchmarked run in a fresh process (so peak RSS is its own):

    python -m ppo_exp.bench.worker ppo_exp|floor SPEC.json OUT.json

TRL runs through `trl_driver.py` instead, with TRL's own interpreter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    system, spec_path, out_path = sys.argv[1:4]
    spec = json.loads(Path(spec_path).read_text())
    if system == "ppo_exp":
        from ppo_exp.bench import ours as runner
    elif system == "floor":
        from ppo_exp.bench import floor as runner
    else:
        raise SystemExit(f"invalid system={system!r}; accepted: 'ppo_exp' | 'floor'")
    Path(out_path).write_text(json.dumps(runner.run(spec)))


if __name__ == "__main__":
    main()
