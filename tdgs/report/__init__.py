"""tdgs-report: the runs below some folders, aggregated into the tables and plots of
docs/reproducing.md (:mod:`.collect` finds and reads runs, :mod:`.stats` compares groups, :mod:`.tables`
and :mod:`.plots` write the report)."""
