"""How the app runs in its process: what its lifespan does to the interpreter."""

import gc

from backoffice.core.config import Settings
from backoffice.core.main import create_app


async def test_objects_alive_at_start_up_are_kept_from_the_collector_while_the_app_serves(
    settings: Settings,
) -> None:
    """A full collection walks every tracked object; the app's start-up objects (about
    150,000) would make it a pause some request pays. Frozen while serving, released after."""
    gc.unfreeze()
    app = create_app(settings)

    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()
        assert frozen > 50_000  # the modules, routes, models and schemas at least
        request_garbage = [[index] for index in range(1000)]
        assert gc.get_freeze_count() == frozen  # what requests allocate stays collectable
        del request_garbage

    assert gc.get_freeze_count() == 0
