"""The window engine's pure core; `processors.windows` is its public face."""
