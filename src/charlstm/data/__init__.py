"""Data: text sources in, character ids out.

The first layer of the one path data takes (docs/architecture.md): read and decode sources (`corpus`, `sources`),
number their characters (`vocab`), encode big corpora once into memory-mapped ids (`prepare`, `prepared`,
`cache`), and lay out the windows or sequences training reads (`batches`). Nothing here imports training,
generation, the server or the CLI.
"""
