"""Option classes of the scripts: parse, check, then build the frozen configs the floors below take."""
