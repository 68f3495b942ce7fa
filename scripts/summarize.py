"""Same as `python -m reporting.summary`, runnable from anywhere: python scripts/summarize.py save/ [--plot]"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702
from reporting.summary import main  # noqa: E402
main()
