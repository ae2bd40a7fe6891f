"""feedrank: the command line and the pipeline that drive the stages (the top floor)."""
