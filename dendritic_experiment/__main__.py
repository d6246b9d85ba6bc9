"""python -m dendritic_experiment: the same command as python dendritic_experiment/main.py."""
import sys

from dendritic_experiment.main import cli

sys.exit(cli())
