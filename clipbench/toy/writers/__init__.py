"""Writers of each dataset's on-disk release format, one module per loader module of ``clipbench.data``.

The toy world and the tests write their fixtures with them, and the real loaders read them back. File
and folder names come from the loader modules, so each format is defined once, by its reader."""
