"""feedrank: the command line, configuration and table schemas shared by the stages."""
