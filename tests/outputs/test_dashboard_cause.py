"""
The dashboard where it says there is no reading: why the service's joins
fail, in the page's language, from a real poller whose password the emulated
meter refuses, and from a store filled by hand.
"""

import datetime

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.outputs.web import make_root
from smartmeter_tx.service.store import JoinFailure
from tests.outputs.test_dashboard import PageChecks, get, live_poller, wall_at
from tests.outputs.test_web import service_view


class CauseTests(PageChecks, SynchronousTestCase):
    def test_refusedPasswordSaid(self):
        """
        A service whose joins the meter refuses (EVENT 24) shows "no reading"
        and, below it, that the credentials were refused, in English and in
        Japanese; once the meter takes the password, neither is shown.
        """
        loop, poller, wall = live_poller(self, hours=0.05, password="BA9876543210")
        self.assertIsNone(poller.store.latest)
        root = make_root(poller.view(), wall)
        for language, words in (
                ("en", "The meter refused authentication: check the B-route ID and password."),
                ("ja", "メーターが認証を拒否しました。Bルート認証 ID とパスワードを確認してください。")):
            page = self.page(get(root, accept_language=language)[2])
            self.assertIn("power-note", page.ids)
            cause = page["power-cause"]
            self.assertEqual(cause.text(), words)
            self.assertEqual(cause.attrs["data-kind"], "refused")
            self.assertEqual(cause.attrs["data-value"], poller.store.join_failure.text)
        loop.emulator.config.password = poller.config.credentials.password
        loop.advance(1200)
        page = self.page(get(root)[2])
        self.assertNotIn("power-cause", page.ids)
        self.assertNotIn("power-note", page.ids)

    def test_otherCauseInTheServicesWords(self):
        """A cause the page has no words for is shown as the service says it, after "Why:"."""
        clock = Clock()
        view = service_view(clock)
        view.store.join_failed(JoinFailure("other", "timed out while joining the meter"))
        root = make_root(view, lambda: wall_at(datetime.datetime(2024, 6, 1, 9, 0)))
        for language, label in (("en", "Why: "), ("ja", "原因: ")):
            page = self.page(get(root, accept_language=language)[2])
            self.assertEqual(page["power-cause"].text(),
                             label + "timed out while joining the meter")
