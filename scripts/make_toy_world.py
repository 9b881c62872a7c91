"""Write the seeded toy world to disk: the installed ``clipbench-toy-world`` command (clipbench/toy/make_world.py)."""

from clipbench.toy.make_world import main, make_toy_world  # noqa: F401  (tests call make_toy_world)

if __name__ == "__main__":
    main()
