"""
Run by Home Assistant's own interpreter, never imported by the suite
(L{tests.home_assistant} starts it): it gives a new configuration directory
an owner (an administrator with a username and password, as onboarding
makes it), a second user who is not an administrator, a long-lived access
token for each, made by HA's auth manager as the profile page makes them,
and marks onboarding done.  It prints C{{"admin": TOKEN, "user": TOKEN}} as
JSON on stdout.

    python ha_owner.py CONFIG_DIR
"""

import asyncio
import datetime
import json
import secrets
import sys

from homeassistant import core
from homeassistant.auth import auth_manager_from_config
from homeassistant.auth.const import GROUP_ID_ADMIN, GROUP_ID_USER
from homeassistant.auth.models import TOKEN_TYPE_LONG_LIVED_ACCESS_TOKEN
from homeassistant.components.onboarding import STORAGE_KEY, STORAGE_VERSION
from homeassistant.components.onboarding.const import STEPS
from homeassistant.const import EVENT_HOMEASSISTANT_FINAL_WRITE
from homeassistant.helpers import device_registry, entity_registry
from homeassistant.helpers.storage import Store


async def make_users(config_dir: str) -> dict:
    hass = core.HomeAssistant(config_dir)
    # The auth store reads the device registry when it loads, which reads
    # the entity registry: both load together, as HA's bootstrap does it.
    await asyncio.gather(device_registry.async_load(hass), entity_registry.async_load(hass))
    hass.auth = await auth_manager_from_config(hass, [{"type": "homeassistant"}], [])
    provider = hass.auth.auth_providers[0]
    await provider.async_initialize()
    tokens = {}
    for name, group in (("admin", GROUP_ID_ADMIN), ("user", GROUP_ID_USER)):
        # The first user made is the owner, as in onboarding.
        user = await hass.auth.async_create_user(f"smartmeter_tx test {name}",
                                                 group_ids=[group])
        await provider.async_add_auth(name, secrets.token_urlsafe(16))
        credentials = await provider.async_get_or_create_credentials({"username": name})
        await hass.auth.async_link_user(user, credentials)
        refresh = await hass.auth.async_create_refresh_token(
            user, client_name="smartmeter_tx tests",
            token_type=TOKEN_TYPE_LONG_LIVED_ACCESS_TOKEN,
            access_token_expiration=datetime.timedelta(days=3650))
        tokens[name] = hass.auth.async_create_access_token(refresh)
    await Store(hass, STORAGE_VERSION, STORAGE_KEY, private=True).async_save(
        {"done": list(STEPS)})
    # The auth store saves after a delay: HA's final write flushes it now.
    hass.bus.async_fire(EVENT_HOMEASSISTANT_FINAL_WRITE)
    await hass.async_block_till_done()
    return tokens


if __name__ == "__main__":
    print(json.dumps(asyncio.run(make_users(sys.argv[1]))))
