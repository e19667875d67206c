"""The odedsl grammar, shipped as package data (``odedsl.grammars``)."""
