"""Generated data: the seeded toy world (``world``), the ``clipbench-toy-world`` command that writes it
(``make_world``), and writers of each dataset's release format (``writers``) for the toy world and tests.

Nothing here is needed to evaluate real data: ``clipbench.data`` holds the loaders, and defines each format."""
