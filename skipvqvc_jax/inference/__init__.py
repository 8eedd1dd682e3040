"""Conversion: the Converter (the Python API), the conversions a command asks for, and a source's F0."""
