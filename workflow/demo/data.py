"""The demo's fixed data: where and when offices open, the counties, the names, the refusal
grounds, the seeds, and the shares and scenarios the stories are drawn from.

Nothing here draws a random number: `workflow.demo.planning` does, from these tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time as clock_time
from datetime import timedelta, timezone
from enum import Enum
from pathlib import Path

import workflow as wf

CST = timezone(timedelta(hours=8), "CST")
"""China Standard Time: the acceptance points' office hours are local time."""
OPENS = clock_time(8, 30)
CLOSES = clock_time(17, 30)
PERIOD_DAYS = 90
"""Days replayed, the last of them being the day the demo ends on."""

DEFAULT_DB = Path("var/demo.db")
DEMO_MARKER = 0x49444344
"""``PRAGMA application_id`` of every database the demo creates (``IDCD`` in ASCII): a later
run replaces only a file that carries it, unless ``--force``."""
DEFAULT_APPLICATIONS = 300
DEFAULT_SEED = 20_260_301
MAX_APPLICATIONS = 100_000
"""The most applications one run replays (the command line refuses more)."""


@dataclass(frozen=True)
class County:
    """A county-level division: its 6-digit GB/T 2260 code and its name."""

    code: str
    name: str


ACCEPTANCE_POINTS: tuple[tuple[County, int], ...] = (
    (County("440305", "Nanshan, Shenzhen"), 35),
    (County("440106", "Tianhe, Guangzhou"), 25),
    (County("310115", "Pudong, Shanghai"), 25),
    (County("330106", "Xihu, Hangzhou"), 15),
)
"""The acceptance points (county, share of the applications)."""

HUKOU_COUNTIES: tuple[County, ...] = (
    County("110105", "Chaoyang, Beijing"),
    County("110101", "Dongcheng, Beijing"),
    County("310115", "Pudong, Shanghai"),
    County("440106", "Tianhe, Guangzhou"),
    County("510107", "Wuhou, Chengdu"),
    County("513022", "Xuanhan County, Dazhou"),
    County("420102", "Jiang'an, Wuhan"),
    County("421023", "Jianli, Jingzhou"),
    County("430102", "Furong, Changsha"),
    County("431121", "Qiyang, Yongzhou"),
    County("410105", "Jinshui, Zhengzhou"),
    County("412726", "Dancheng County, Zhoukou"),
    County("360102", "Donghu, Nanchang"),
    County("500103", "Yuzhong, Chongqing"),
    County("500235", "Yunyang County, Chongqing"),
    County("450103", "Qingxiu, Nanning"),
    County("520102", "Nanming, Guiyang"),
    County("340104", "Shushan, Hefei"),
    County("341221", "Linquan County, Fuyang"),
    County("370102", "Lixia, Jinan"),
    County("610113", "Yanta, Xi'an"),
    County("230102", "Daoli, Harbin"),
    County("350102", "Gulou, Fuzhou"),
    County("330106", "Xihu, Hangzhou"),
)
"""Household-registration counties the applicants come from."""

OLD_CODES: dict[str, str] = {
    "110101": "110103",  # Chongwen District, merged into Dongcheng in 2010
    "310115": "310225",  # Nanhui County, merged into Pudong in 2009
    "500235": "512237",  # Yunyang County, Sichuan, before Chongqing became a municipality
}
"""Division codes that no longer exist but still stand at the head of citizen numbers."""

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂英华建国志红玉梅文斌"

REJECTION_GROUNDS: tuple[tuple[wf.RejectionGround, int, tuple[str, ...]], ...] = (
    (
        wf.RejectionGround.IDENTITY_MISMATCH,
        40,
        (
            "Birth date on the form differs from the population register.",
            "Registered address does not match the population register.",
            "Name on the form differs from the register (character changed in 2019).",
        ),
    ),
    (
        wf.RejectionGround.FIRST_APPLICATION,
        15,
        ("No resident identity card has ever been issued; first applications are made at home.",),
    ),
    (
        wf.RejectionGround.APPEARANCE_CHANGED,
        15,
        ("Photo differs greatly from the register photo and no fingerprints are on file.",),
    ),
    (
        wf.RejectionGround.DOCUMENT_FRAUD_RECORD,
        10,
        ("Record of fraudulent use of another person's identity card (2021).",),
    ),
    (
        wf.RejectionGround.BAD_CREDIT_RECORD,
        8,
        ("Listed in the bad-credit record of the public security organ.",),
    ),
    (
        wf.RejectionGround.OTHER,
        12,
        (
            "Household registration moved out of this county in 2024; apply at the new county.",
            "Household registration is suspended pending a correction of the register.",
            "The register records the person as deceased; verification in person required.",
        ),
    ),
)
"""Refusal grounds of the household-registration county, with weights and detailed reasons."""


COUNTIES: dict[str, County] = {
    c.code: c for c in (*(p for p, _ in ACCEPTANCE_POINTS), *HUKOU_COUNTIES)
}
"""Every county of the demo by code: the offices where cards are reported lost or handed in."""


class Fate(Enum):
    """How an application's story goes, whenever the period leaves time for it."""

    NORMAL = "normal"
    REJECTED = "rejected"
    REVIEW_STALLED = "review_stalled"
    PRODUCTION_DELAYED = "production_delayed"
    NO_SHOW = "no_show"


FATES = (Fate.NORMAL, Fate.REJECTED, Fate.REVIEW_STALLED, Fate.PRODUCTION_DELAYED, Fate.NO_SHOW)
FATE_WEIGHTS = (74, 7, 3, 6, 10)

# The first applicants get a scenario, so that even a small run shows every outcome: a renewal
# turned away once at the counter, a refusal, a collected replacement (whose applicant also tries
# to report the loss at a police station), a review and a production overdue, an application
# handed in on the last day, a replacement collected after the loss was reported at an office,
# and a replacement on its way when the lost card is handed in (its owner is refused the card,
# which is destroyed). (fate, forgets the old card, kind, submitted this many days before the
# last day: range)
SCENARIOS: tuple[tuple[Fate, bool, wf.Kind | None, tuple[int, int]], ...] = (
    (Fate.NORMAL, True, wf.Kind.RENEWAL, (70, 88)),
    (Fate.REJECTED, False, None, (10, 80)),
    (Fate.NORMAL, False, wf.Kind.REPLACEMENT, (70, 88)),
    (Fate.REVIEW_STALLED, False, None, (10, 50)),
    (Fate.PRODUCTION_DELAYED, False, None, (62, 85)),
    (Fate.NORMAL, False, None, (0, 0)),
    (Fate.NORMAL, False, wf.Kind.REPLACEMENT, (62, 80)),
    (Fate.NORMAL, False, wf.Kind.REPLACEMENT, (25, 60)),
)
REPORTS_AGAIN = 2
"""The scenario whose replacement applicant reports the loss again at a police station."""
REPORTED_FIRST = 6
"""The scenario whose applicant reported the loss at an office before applying."""
CARD_HANDED_IN = 7
"""The scenario whose lost card is handed in while the replacement is on its way."""


class Loss(Enum):
    """How the story of a lost card goes when its owner does not apply for a replacement."""

    FINDS_IT = "finds_it"
    """The owner finds the card and withdraws the report in person."""
    HANDED_IN = "handed_in"
    """A finder hands the card in at an office; the owner collects it there."""
    STILL_LOST = "still_lost"
    """Nothing more happens in the period."""


LOSSES = (Loss.FINDS_IT, Loss.HANDED_IN, Loss.STILL_LOST)
LOSS_WEIGHTS = (45, 25, 30)
LOSS_SHARE = 0.12
"""Citizens who report a loss and do not apply, per application."""
UNREPORTED_SHARE = 0.04
"""Cards handed in whose owners never reported them lost, per application."""

# The opening stories of lost cards: (outcome, reported this many days before the last day:
# range). Then a card nobody reported lost, handed in a few days before the end and still held.
LOSS_SCENARIOS: tuple[tuple[Loss, tuple[int, int]], ...] = (
    (Loss.FINDS_IT, (55, 80)),
    (Loss.HANDED_IN, (55, 80)),
    (Loss.STILL_LOST, (10, 40)),
)
UNCLAIMED_SCENARIO = (2, 6)
