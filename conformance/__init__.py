"""optbridge's conformance suite, installed as ``optbridge_conformance``.

Cases and expected deviations are data files in this folder; the runner lives
here too. Filled by the conformance issue.
"""
