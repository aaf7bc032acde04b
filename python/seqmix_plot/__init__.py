"""Figures from seqmix runs and sweeps (matplotlib).

    python3 -m seqmix_plot SWEEPDIR          # results.csv -> accuracy vs width, accuracy vs state size
    python3 -m seqmix_plot RUNDIR [RUNDIR..] # metrics.jsonl -> loss and accuracy curves

`seqmix plot` runs this package with Debian's /usr/bin/python3. The modules:
common (errors, labels, colours, saving), sweep (results.csv), runs (metrics.jsonl),
cli (the command line).
"""
