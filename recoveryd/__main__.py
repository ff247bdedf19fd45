from recoveryd.cli import entry_point

entry_point()
