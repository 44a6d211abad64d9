#!/usr/bin/env python3
"""Where a cold boot's time goes, from s3lun's timeline log (RUST_LOG=s3lun::timeline=debug):
one line per read that missed memory, with the chunks it needed, how many of them were
already on their way (another read's fetch, read-ahead or a background run: "joined")
and how long the read waited. Prints totals, the split, and the slowest reads."""
import re
import sys

FIELD = re.compile(r"(\w+)=(\d+)")
misses = []
first_ts = None
for line in open(sys.argv[1], errors="replace"):
    if "s3lun::timeline" not in line or "miss" not in line:
        continue
    f = {k: int(v) for k, v in FIELD.findall(line)}
    if "waited_us" in f:
        misses.append(f)
if not misses:
    print("no timeline lines (RUST_LOG=s3lun::timeline=debug?)")
    sys.exit(0)
total = sum(m["waited_us"] for m in misses)
own = [m for m in misses if m.get("joined", 0) == 0]
joined = [m for m in misses if m.get("joined", 0) > 0]
def ms(v):
    return f"{v / 1000:.0f} ms"
print(f"reads that missed memory: {len(misses)}, waiting {ms(total)} in all (reads in flight overlap)")
print(f"  fetched for the read itself: {len(own)} reads, {ms(sum(m['waited_us'] for m in own))}, "
      f"median {ms(sorted(m['waited_us'] for m in own)[len(own) // 2]) if own else '-'}")
print(f"  waiting on a fetch already under way: {len(joined)} reads, {ms(sum(m['waited_us'] for m in joined))}, "
      f"median {ms(sorted(m['waited_us'] for m in joined)[len(joined) // 2]) if joined else '-'}")
print("slowest reads (offset, bytes, chunks, joined, waited):")
for m in sorted(misses, key=lambda m: -m["waited_us"])[:8]:
    print(f"  {m['offset']:>14} {m['len']:>8} {m['chunks']:>3} {m.get('joined', 0):>3} {ms(m['waited_us'])}")
