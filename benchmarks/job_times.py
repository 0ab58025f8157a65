"""Where a run's time went: per rule, the jobs and their summed wall seconds.

Reads the log Snakemake prints (or .snakemake/log/*.snakemake.log):

    snakemake --cores all > run.log 2>&1
    python benchmarks/job_times.py run.log

Each job's time runs from the timestamp before its `rule`/`localrule` block to the
one before its `Finished jobid` line, so it includes the job's process start-up.
With several cores the sum over jobs is core-seconds, not the run's wall time
(printed on the last line).
"""

import re
import sys
from collections import defaultdict
from datetime import datetime

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def job_seconds(lines):
    """{rule: [seconds of each job]} from the lines of a Snakemake log."""
    stamp, rule, started, seconds = None, None, {}, defaultdict(list)
    for line in lines:
        line = line.rstrip("\n")
        if match := STAMP.match(line):
            stamp = datetime.strptime(" ".join(match.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif match := START.match(line):
            rule = match.group(1)
        elif (match := JOBID.match(line)) and rule is not None:
            started[match.group(1)] = stamp
            rule = None
        elif match := FINISHED.match(line):
            if match.group(1) in started:
                seconds[match.group(2)].append(
                    (stamp - started.pop(match.group(1))).total_seconds())
    return seconds


def main(path):
    with open(path) as handle:
        lines = handle.readlines()
    seconds = job_seconds(lines)
    total = sum(sum(values) for values in seconds.values())
    print(f"{'rule':32} {'jobs':>5} {'seconds':>9} {'share':>6}")
    for rule, values in sorted(seconds.items(), key=lambda item: -sum(item[1])):
        print(f"{rule:32} {len(values):5d} {sum(values):9.0f} {sum(values) / total:6.1%}")
    stamps = [datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
              for m in map(STAMP.match, (line.rstrip("\n") for line in lines)) if m]
    print(f"summed job seconds {total:.0f}; wall from first to last timestamp "
          f"{(stamps[-1] - stamps[0]).total_seconds():.0f} s")


if __name__ == "__main__":
    main(sys.argv[1])
