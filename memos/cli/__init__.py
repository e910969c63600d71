"""CLI placeholder."""


def main() -> None: ...
