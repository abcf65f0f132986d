from stress.cli import entry

entry()
