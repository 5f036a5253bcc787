"""The shared seed vocabulary: deterministic from the sandbox's rng, fictional, well-formed."""

from __future__ import annotations

import difflib
import random
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sandboxes.kit import seed


def draw_everything(rng: random.Random) -> list[Any]:
    """One of each generator, several times, in a fixed order."""
    out: list[Any] = []
    for _ in range(20):
        name = seed.company_name(rng)
        out += [
            name, seed.company_name(rng, suffix=False), seed.customer_name(rng), seed.person(rng),
            seed.street(rng), seed.street(rng, short=True), seed.address(rng), seed.address(rng, suite=1.0),
            *(seed.phone(rng, style) for style in seed.PHONE_STYLES), seed.tax_id(rng), seed.item(rng),
            seed.item(rng, equipment=0.5), seed.gl_account(rng), seed.gl_account(rng, "Expense"),
            seed.cost_code(rng), seed.project_name(rng), seed.amount(rng, 10, 5000),
            seed.near_duplicate(rng, name), seed.near_duplicate_street(rng, "100 Main Street"),
            seed.pick(rng, seed.BANKS),
        ]
    return out


def test_the_same_seed_gives_the_same_data() -> None:
    assert draw_everything(random.Random(42)) == draw_everything(random.Random(42))


def test_different_seeds_give_different_data() -> None:
    assert draw_everything(random.Random(1)) != draw_everything(random.Random(2))


def test_generators_draw_only_from_the_rng_given() -> None:
    random.seed(99)
    expected = random.random()
    random.seed(99)
    draw_everything(random.Random(5))
    assert random.random() == expected  # the module-level generator was never touched


def test_a_known_seed_is_stable_across_releases() -> None:
    """Seeds name data sets in tests and demos; changing the words changes them (on purpose)."""
    rng = random.Random(2025)
    sample = (seed.company_name(rng), seed.person(rng).name, seed.phone(rng))
    again = random.Random(2025)
    assert sample == (seed.company_name(again), seed.person(again).name, seed.phone(again))
    assert all(isinstance(part, str) and part for part in sample)


# ---- forms -----------------------------------------------------------------------------------


def test_phone_styles() -> None:
    patterns = {
        "paren": r"\(\d{3}\) 555-\d{4}", "dashed": r"\d{3}-555-\d{4}", "digits": r"\d{3}555\d{4}",
        "intl": r"\+1 \(\d{3}\) 555-\d{4}", "e164": r"\+1\d{3}555\d{4}",
    }
    assert set(patterns) == set(seed.PHONE_STYLES)
    rng = random.Random(3)
    for _ in range(50):
        for style, pattern in patterns.items():
            assert re.fullmatch(pattern, seed.phone(rng, style)), style
    with pytest.raises(ValueError):
        seed.phone(rng, "morse")


def test_mail_and_web_forms() -> None:
    assert seed.slug("Carolina Pipe & Valve, Inc.") == "carolinapipevalveinc"
    assert seed.slug("Acme Supply Co.", 6) == "acmesu"
    assert seed.domain_for("Acme Supply Co.") == "acmesupplyco.example.com"
    assert seed.email_for("Acme Supply Co.") == "ap@acmesupplyco.example.com"
    assert seed.email_for("Acme", mailbox="billing", tld="example") == "billing@acme.example"
    assert seed.email_for("&&&") == "ap@company.example.com"
    who = seed.Person("Maria", "Lopez")
    assert (who.name, who.username, seed.person_email(who)) == ("Maria Lopez", "maria.lopez",
                                                                 "maria.lopez@example.com")
    assert re.fullmatch(r"\d{2}-\d{7}", seed.tax_id(random.Random(1)))


def test_addresses_come_from_the_lists() -> None:
    rng = random.Random(8)
    cities = {(c.name, c.state, c.postcode, c.country) for c in seed.CITIES}
    for _ in range(100):
        where = seed.address(rng)
        assert (where.city, where.state, where.postcode, where.country) in cities
        number, rest = where.street.split(" ", 1)
        assert 10 <= int(number) <= 9999
        assert any(rest.endswith(" " + long) for long, _ in seed.STREET_TYPES)
        assert where.line2 == "" or re.fullmatch(r"Suite \d{3}", where.line2)
    assert all(seed.address(rng, suite=1.0).line2 for _ in range(10))
    assert not any(seed.address(rng, suite=0.0).line2 for _ in range(10))
    short = seed.street(random.Random(1), short=True)
    assert any(short.endswith(" " + abbreviated) for _, abbreviated in seed.STREET_TYPES)


def test_company_and_customer_names_are_built_from_the_words() -> None:
    rng = random.Random(11)
    for _ in range(50):
        name = seed.company_name(rng)
        assert any(name.startswith(stem + " ") for stem in seed.COMPANY_STEMS)
        assert any(name.endswith(" " + suffix) for suffix in seed.COMPANY_SUFFIXES)
        bare = seed.company_name(rng, suffix=False)
        assert any(bare.endswith(" " + trade) for trade in seed.TRADES)
        customer = seed.customer_name(rng)
        assert any(customer.endswith(" " + kind) for kind in seed.SITE_KINDS)


def test_near_duplicates_differ_but_stay_close() -> None:
    rng = random.Random(4)
    for _ in range(200):
        name = seed.company_name(rng)
        twin = seed.near_duplicate(rng, name)
        assert twin != name
        assert difflib.SequenceMatcher(None, twin.casefold(), name.casefold()).ratio() >= 0.75, (name, twin)
    assert seed.near_duplicate(random.Random(0), "AB") != "AB"
    seen = {seed.near_duplicate(random.Random(i), "Acme Supply Inc.") for i in range(60)}
    assert {"ACME SUPPLY INC.", "Acme Supply Inc", "Acme Supply, Inc."} <= seen


def test_near_duplicate_streets_swap_the_spelling() -> None:
    rng = random.Random(0)
    assert seed.near_duplicate_street(rng, "100 Main Street") == "100 Main St."
    assert seed.near_duplicate_street(rng, "100 Main St.") == "100 Main Street"
    assert seed.near_duplicate_street(rng, "100 Main St") == "100 Main Street"
    assert seed.near_duplicate_street(rng, "9 Harbor Blvd.") == "9 Harbor Boulevard"
    odd = seed.near_duplicate_street(rng, "PO Box 12")
    assert odd != "PO Box 12" and odd.casefold().rstrip(".") == "po box 12"


# ---- goods, ledgers, jobs ---------------------------------------------------------------------


def test_items_are_unique_and_priced_in_known_units() -> None:
    everything = seed.ITEMS + seed.EQUIPMENT
    assert len({i.code for i in everything}) == len(everything)
    assert all(i.unit in seed.UNITS and i.cost > 0 and i.cost == i.cost.quantize(Decimal("0.01"))
               for i in everything)
    rng = random.Random(6)
    assert all(seed.item(rng) in seed.ITEMS for _ in range(50))
    assert any(seed.item(rng, equipment=0.9) in seed.EQUIPMENT for _ in range(50))


def test_accounts_by_kind() -> None:
    numbers = [a.number for a in seed.GL_ACCOUNTS]
    assert len(set(numbers)) == len(numbers) and numbers == sorted(numbers)
    assert {a.kind for a in seed.GL_ACCOUNTS} == set(seed.ACCOUNT_KINDS)
    rng = random.Random(2)
    assert all(seed.gl_account(rng, "Income").kind == "Income" for _ in range(20))
    with pytest.raises(ValueError):
        seed.gl_account(rng, "Mystery")


def test_cost_codes_and_projects() -> None:
    pairs = [(c.division, c.code) for c in seed.COST_CODES]
    assert len(set(pairs)) == len(pairs)
    assert all(re.fullmatch(r"\d{2}", c.division) and re.fullmatch(r"\d{3}", c.code) for c in seed.COST_CODES)
    rng = random.Random(3)
    for _ in range(30):
        project = seed.project_name(rng)
        assert any(project.startswith(name) for name in seed.PROJECT_NAMES)


def test_amounts_are_whole_cents_within_bounds() -> None:
    rng = random.Random(12)
    for _ in range(200):
        value = seed.amount(rng, 0.5, 99.99)
        assert Decimal("0.50") <= value <= Decimal("99.99")
        assert value == value.quantize(Decimal("0.01"))


def test_the_kit_names_no_vendor() -> None:
    text = Path(seed.__file__).read_text().lower()
    for vendor in ("acumatica", "epicor", "procore", "servicenow", "servicetitan", "syspro"):
        assert vendor not in text
