#!/usr/bin/env python3
# One line per RESULT of device.sh (stdin): llama-bench avg_ts +- stddev, qwglm prefill / decode tok/s.
import sys, json
for line in sys.stdin:
    if not line.startswith("RESULT "): 
        if line.startswith("GPU"): print(line.strip())
        continue
    parts = line.split(" ", 3)
    who, model, rest = parts[1], parts[2], parts[3]
    i = rest.find("{")
    if i < 0: continue
    try: d = json.loads(rest[i:])
    except Exception: continue
    if who == "llama.cpp":
        print(who, model, "fa" if d.get("flash_attn") else "nofa", "p%d g%d" % (d.get("n_prompt"), d.get("n_gen")), round(d.get("avg_ts"), 1), "+-", round(d.get("stddev_ts"), 1))
    else:
        print(who, model, "pp", round(d["prefill_tok_s"]), "tg", round(d["decode_tok_s"], 1))
