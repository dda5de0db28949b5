"""SKSTACK IP: the line codec and the Twisted protocol."""
