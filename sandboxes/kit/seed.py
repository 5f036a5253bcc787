"""One seed-data vocabulary for every sandbox: the words, and small generators over them.

Usage::

    rng = random.Random(options.seed)          # the sandbox's own, seeded: same seed, same data
    name = company_name(rng)                   # "Summit Plumbing Supply LLC"
    twin = near_duplicate(rng, name)           # "SUMMIT PLUMBING SUPPLY LLC", "... L.L.C.", ...
    who = person(rng)                          # Person("Maria", "Lopez"); who.name, who.username
    where = address(rng)                       # Address("4410 Oak Avenue", "", "Denver", "CO", "80202", "US")
    phone(rng), phone(rng, "digits")           # "(415) 555-0134", "4155550134"
    email_for(name)                            # "ap@summitplumbingsupply.example.com"
    part = item(rng)                           # Item("CAP-45/5", "Run capacitor 45/5 MFD 440V", "EA", Decimal("18.40"))
    account = gl_account(rng, "Expense")       # Account("5100", "Materials", "Expense")

Every sandbox seeds the same kind of trade business (suppliers, parts, jobs, a chart of
accounts) from its own `random.Random`, so a seed number always yields the same records. The
word lists used to be copied into each sandbox and drift; they live here now. The sandbox keeps
its facts: field names, key formats, numbering, how many of what it makes. Every generator draws
only from the `rng` it is given, never from the module-level `random`, so one sandbox's seeding
cannot disturb another's sequence.

All names, addresses, phone numbers (555 exchange) and mail domains (`.example`) are fictional.
"""

from __future__ import annotations

import re
from decimal import Decimal
from random import Random
from typing import NamedTuple, Sequence, TypeVar

T = TypeVar("T")

# ---- companies -------------------------------------------------------------------------------

COMPANY_STEMS = (
    "Acme", "Allied", "Apex", "Atlas", "Beacon", "Blue Ridge", "Bluewater", "Cardinal", "Cascade", "Coastal",
    "Cornerstone", "Delta", "Eagle", "Evergreen", "Frontier", "Granite", "Great Lakes", "Gulf Coast", "Harbor",
    "Heartland", "Ironclad", "Ironwood", "Keystone", "Liberty", "Lone Star", "Metro", "Midwest", "Northern",
    "Northstar", "Pioneer", "Prairie", "Precision", "Quality", "Redwood", "Reliable", "Silver Creek", "Sterling",
    "Summit", "Tri-County", "United", "Valley",
)
TRADES = (
    "Bearings", "Coatings", "Concrete", "Controls", "Drywall", "Electric", "Electrical", "Excavation",
    "Fasteners", "Filters", "Fire Protection", "Flooring", "Glazing", "HVAC", "HVAC Parts", "Hydraulics",
    "Industrial", "Insulation", "Lumber", "Masonry", "Mechanical", "Packaging", "Painting", "Paving",
    "Pipe & Valve", "Plumbing", "Plumbing Supply", "Refrigeration", "Roofing", "Safety", "Sheet Metal", "Steel",
    "Supply", "Tool", "Tool Rental", "Welding",
)
COMPANY_SUFFIXES = ("Inc.", "LLC", "Co.", "Corp.", "Company", "Ltd.", "Group", "Distributors", "Wholesale",
                    "Supply", "Contractors", "Services")
# Other spellings of the same legal suffix, as one supplier is typed over the years.
SUFFIX_SPELLINGS = {
    "Inc.": ("Inc", ", Inc.", ", Inc", "Incorporated"),
    "LLC": ("L.L.C.", "Llc", ", LLC"),
    "Co.": ("Co", "Company"),
    "Company": ("Co.", "Co"),
    "Corp.": ("Corp", "Corporation"),
    "Ltd.": ("Ltd", "Limited"),
}
# Well-known kinds of trade distributor, for seeds that want recognisable supplier names.
DISTRIBUTORS = (
    "Ferguson Enterprises", "Johnstone Supply", "Grainger Industrial Supply", "Winsupply", "Carrier Enterprise",
    "Lennox PartsPlus", "Hajoca Plumbing Supply", "Graybar Electric", "United Refrigeration", "Watsco Distribution",
    "Gensco", "Consolidated Pipe & Supply", "Sunbelt Rentals", "Fastenal", "Rexel Electrical Supply",
    "Wesco Distribution", "Goodman Distribution", "Baker Distributing", "Morrison Supply", "R.E. Michel Company",
)
# Customers of a service business: sites and organisations rather than suppliers.
PLACE_WORDS = ("Oak Ridge", "Sunset", "Riverside", "Harbor Point", "Lakeside", "Northgate", "Cedar Creek",
               "Summit", "Parkview", "Bayshore", "Maple Grove", "Westfield", "Sierra", "Golden State", "Sunnyside",
               "Fig Garden", "Copper River", "Eastgate", "Civic", "Airport")
SITE_KINDS = ("Apartments", "Medical Plaza", "Elementary School", "Condominiums", "Dental Group",
              "Shopping Center", "Church", "Office Park", "Senior Living", "Hotel & Suites", "HOA",
              "Logistics Center", "Property Management", "Storage", "Veterinary Clinic", "Auto Body", "Bakery",
              "Fitness", "Library")
BANKS = ("First National Bank", "Wells Fargo Bank", "Bank of America", "PNC Bank", "Truist Bank", "US Bank")
PAYMENT_TERMS = ("Net 15", "Net 30", "Net 30", "Net 45", "Net 60", "2% 10 Net 30", "Due on receipt")
DEPARTMENTS = ("Operations", "Maintenance", "Engineering", "Production", "Facilities", "Logistics", "Quality",
               "IT", "Service", "Installation", "Construction", "Administration")

# ---- people ----------------------------------------------------------------------------------

FIRST_NAMES = (
    "James", "Maria", "Robert", "Linda", "Michael", "Patricia", "David", "Jennifer", "Carlos", "Susan", "Daniel",
    "Karen", "Jose", "Nancy", "Thomas", "Lisa", "Kevin", "Angela", "Brian", "Sandra", "Hector", "Michelle",
    "Steven", "Emily", "William", "Mary", "Elizabeth", "Joseph", "Charles", "Dana", "Priya", "Luis", "Mei",
    "Aisha",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Nguyen", "Thompson",
    "Ramirez", "Patel", "Clark", "Lewis", "Walker", "Young", "Allen", "King", "Wright", "Torres", "Kowalski",
    "Raman", "Ortega", "Chen", "Becker", "Bello",
)
NICKNAMES = {"James": "Jim", "Robert": "Bob", "Michael": "Mike", "William": "Bill", "David": "Dave",
             "Patricia": "Pat", "Jennifer": "Jen", "Elizabeth": "Liz", "Thomas": "Tom", "Daniel": "Dan",
             "Joseph": "Joe", "Charles": "Chuck", "Susan": "Sue", "Steven": "Steve", "Michelle": "Shelly"}

# ---- places ----------------------------------------------------------------------------------

STREET_NAMES = ("Main", "Commerce", "Industrial", "Oak", "Maple", "Airport", "Market", "Lake", "Park", "Mill",
                "Cedar", "Elm", "Washington", "Jefferson", "Highland", "Harbor", "Depot", "Railroad", "Center",
                "Quarry", "Canal", "Blackstone", "Shaw", "Olive")
# (long, abbreviated) spellings; a near-duplicate address swaps one for the other.
STREET_TYPES = (("Street", "St."), ("Avenue", "Ave."), ("Boulevard", "Blvd."), ("Road", "Rd."), ("Drive", "Dr."),
                ("Parkway", "Pkwy."), ("Way", "Way"))


class City(NamedTuple):
    name: str
    state: str  # state or province code
    postcode: str
    country: str = "US"


CITIES = (
    City("Dallas", "TX", "75201"), City("Houston", "TX", "77002"), City("Austin", "TX", "78701"),
    City("Phoenix", "AZ", "85004"), City("Denver", "CO", "80202"), City("Atlanta", "GA", "30303"),
    City("Charlotte", "NC", "28202"), City("Raleigh", "NC", "27601"), City("Nashville", "TN", "37203"),
    City("Tampa", "FL", "33602"), City("Columbus", "OH", "43215"), City("Indianapolis", "IN", "46204"),
    City("Kansas City", "MO", "64106"), City("St. Louis", "MO", "63101"), City("Salt Lake City", "UT", "84101"),
    City("Minneapolis", "MN", "55401"), City("Milwaukee", "WI", "53202"), City("Madison", "WI", "53703"),
    City("Chicago", "IL", "60606"), City("Springfield", "IL", "62701"), City("Detroit", "MI", "48226"),
    City("Des Moines", "IA", "50309"), City("Omaha", "NE", "68102"), City("Boise", "ID", "83702"),
    City("Portland", "OR", "97204"), City("Salem", "OR", "97301"), City("Tacoma", "WA", "98402"),
    City("Sacramento", "CA", "95814"), City("Fresno", "CA", "93721"), City("Clovis", "CA", "93612"),
    City("Visalia", "CA", "93291"), City("Toronto", "ON", "M5V 2T6", "CA"),
)

# ---- goods and services ----------------------------------------------------------------------

UNITS = ("EA", "FT", "LF", "LB", "GAL", "BOX", "CS", "HR", "CY", "SF", "TON", "LS")


class Item(NamedTuple):
    code: str
    description: str
    unit: str
    cost: Decimal


def _items(*rows: tuple[str, str, str, str]) -> tuple[Item, ...]:
    return tuple(Item(code, text, unit, Decimal(cost)) for code, text, unit, cost in rows)


ITEMS = _items(
    ("CAP-45/5", "Run capacitor 45/5 MFD 440V", "EA", "18.40"),
    ("CONT-30A", "Contactor 30A 2 pole 24V coil", "EA", "22.15"),
    ("FLT-16X25", "Pleated filter 16x25x1 MERV 11", "EA", "9.80"),
    ("FLT-20X25", "Air filter 20x25x1 MERV 8", "EA", "12.50"),
    ("MOTOR-CFAN", "Condenser fan motor 1/4 HP", "EA", "142.00"),
    ("R410A-25", "Refrigerant R-410A 25 lb cylinder", "EA", "289.00"),
    ("TSTAT-T6", "Programmable thermostat T6", "EA", "95.00"),
    ("CU-075", "Copper pipe 3/4 in type L x 10 ft", "EA", "48.00"),
    ("CU-ELB-075", "Copper elbow 3/4 in", "EA", "3.10"),
    ("PVC-200", "PVC pipe 2 in Sch40 x 10 ft", "EA", "12.75"),
    ("PEX-050", "PEX tubing 1/2 in x 100 ft", "EA", "41.20"),
    ("VLV-BALL1", "Ball valve 1 in brass", "EA", "16.90"),
    ("WIRE-12", "THHN wire 12 AWG 500 ft", "EA", "118.00"),
    ("WIRE-18/8", "Thermostat wire 18/8", "FT", "0.42"),
    ("BRKR-20A", "Circuit breaker 20A single pole", "EA", "7.60"),
    ("DUCT-8", "Flex duct 8 in x 25 ft R6", "EA", "52.30"),
    ("WH-ELEM", "Water heater element 4500W", "EA", "22.00"),
    ("DRAIN-PAN", "Condensate drain pan", "EA", "41.00"),
    ("BOLT-HEX", "Hex bolt 1/2-13 x 2 zinc", "BOX", "27.50"),
    ("BRG-6204", "Ball bearing 6204-2RS", "EA", "6.25"),
    ("HOSE-HYD", "Hydraulic hose 1/2 in", "FT", "3.80"),
    ("CONC-4000", "Ready-mix concrete 4000 psi", "CY", "165.00"),
    ("REBAR-5", "Rebar #5 grade 60", "LF", "1.15"),
    ("MC-12/2", "12/2 MC cable", "FT", "0.98"),
    ("GWB-58X", "5/8 in type X drywall", "EA", "14.60"),
    ("LUM-2X4", "Lumber 2x4x8 SPF", "EA", "4.35"),
    ("CMU-8", "CMU block 8 in", "EA", "2.70"),
    ("EPOXY-5G", "Epoxy floor coating 5 gal", "EA", "210.00"),
    ("ROD-7018", "Welding rod E7018 1/8", "LB", "3.95"),
    ("GLASS-SAFE", "Safety glasses clear", "BOX", "36.00"),
)
EQUIPMENT = _items(
    ("WH-50G", "Water heater 50 gal gas", "EA", "845.00"),
    ("AC-3T-16S", "Condenser 3 ton 16 SEER", "EA", "2450.00"),
    ("FURN-80K", "Gas furnace 80k BTU 96%", "EA", "1780.00"),
    ("DISP-3/4", "Disposal 3/4 HP", "EA", "189.00"),
    ("PANEL-200", "Load center 200A 40 space", "EA", "312.00"),
)
SERVICE_LINES = ("Diagnostic service call", "Labor - repair", "Maintenance agreement visit", "Installation labor",
                 "After-hours premium", "Drain cleaning - main line", "Panel upgrade", "Electrical troubleshooting",
                 "System tune-up", "Water heater install labor")
EXPENSE_LINES = ("Freight charge", "Equipment rental - lift", "Permit filing fee", "Fuel surcharge", "Shop supplies",
                 "Disposal fee", "Subcontract labor", "Expedite fee", "Refrigerant and recovery",
                 "Copper and fittings", "Small tools", "Fleet fuel", "Electrical supplies", "Shop consumables")

# ---- ledgers and jobs ------------------------------------------------------------------------

ACCOUNT_KINDS = ("Asset", "Liability", "Equity", "Income", "Expense")


class Account(NamedTuple):
    number: str
    name: str
    kind: str  # one of ACCOUNT_KINDS


GL_ACCOUNTS = tuple(Account(*row) for row in (
    ("1000", "Cash - Operating", "Asset"), ("1010", "Cash - Payroll", "Asset"),
    ("1050", "Undeposited Funds", "Asset"), ("1100", "Accounts Receivable", "Asset"),
    ("1200", "Inventory", "Asset"), ("1500", "Vehicles and Equipment", "Asset"),
    ("2000", "Accounts Payable", "Liability"), ("2100", "Accrued Liabilities", "Liability"),
    ("2200", "Sales Tax Payable", "Liability"), ("3000", "Retained Earnings", "Equity"),
    ("4000", "Service Revenue", "Income"), ("4100", "Installation Revenue", "Income"),
    ("4200", "Maintenance Agreement Revenue", "Income"), ("4300", "Material Sales", "Income"),
    ("4900", "Sales Discounts", "Income"), ("5000", "Cost of Goods Sold", "Expense"),
    ("5100", "Materials", "Expense"), ("5200", "Subcontractors", "Expense"), ("5300", "Freight In", "Expense"),
    ("5400", "Equipment Rental", "Expense"), ("6000", "Labor Expense", "Expense"),
    ("6100", "Shop Supplies", "Expense"), ("6200", "Vehicle Fuel", "Expense"), ("6300", "Rent", "Expense"),
    ("6400", "Utilities", "Expense"), ("6500", "Tools and Small Equipment", "Expense"),
    ("6600", "Repairs and Maintenance", "Expense"), ("6700", "Permits and Fees", "Expense"),
    ("6800", "Insurance", "Expense"), ("6900", "Office Expense", "Expense"), ("7000", "Professional Fees", "Expense"),
))


class CostCode(NamedTuple):
    division: str
    division_name: str
    code: str  # within the division
    name: str


# A few CSI MasterFormat divisions and sections, the usual spine of a construction budget.
COST_CODES = tuple(CostCode(division, division_name, code, name) for division, division_name, sections in (
    ("01", "General Requirements", (("100", "Supervision"), ("500", "Temporary Facilities"))),
    ("03", "Concrete", (("100", "Concrete Forming"), ("200", "Reinforcing"), ("300", "Cast-in-Place Concrete"))),
    ("04", "Masonry", (("200", "Unit Masonry"),)),
    ("05", "Metals", (("100", "Structural Steel"), ("500", "Metal Fabrications"))),
    ("07", "Thermal and Moisture Protection", (("200", "Insulation"), ("500", "Membrane Roofing"))),
    ("09", "Finishes", (("200", "Plaster and Gypsum Board"), ("900", "Painting"))),
    ("22", "Plumbing", (("100", "Plumbing Piping"), ("400", "Plumbing Fixtures"))),
    ("23", "HVAC", (("300", "HVAC Air Distribution"), ("700", "Central HVAC Equipment"))),
    ("26", "Electrical", (("100", "Electrical Distribution"), ("500", "Lighting"))),
    ("31", "Earthwork", (("200", "Earth Moving"),)),
) for code, name in sections)
PROJECT_NAMES = ("Riverside Medical Center", "Eastgate Elementary", "Harbor Logistics Hub", "Civic Plaza",
                 "Northpoint Offices", "Lakeside Apartments", "Airport Terminal C", "Westfield Library",
                 "Summit Office Park", "Parkview Senior Living", "Cedar Creek Church Addition",
                 "Maple Grove Fire Station")
PROJECT_KINDS = ("Renovation", "Tenant Improvement", "New Build", "Phase 2", "Retrofit", "Expansion")

# ---- generators ------------------------------------------------------------------------------


class Person(NamedTuple):
    first: str
    last: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def username(self) -> str:
        """`first.last` in lower case, the usual login and mailbox form."""
        return f"{self.first}.{self.last}".lower()


class Address(NamedTuple):
    street: str
    line2: str
    city: str
    state: str
    postcode: str
    country: str


def pick(rng: Random, words: Sequence[T]) -> T:
    """One of `words`; a named helper so every draw visibly goes through the sandbox's rng."""
    return words[rng.randrange(len(words))]


def company_name(rng: Random, *, suffix: bool = True) -> str:
    """A supplier name: stem, trade and (unless `suffix` is False) a legal or trade suffix."""
    name = f"{pick(rng, COMPANY_STEMS)} {pick(rng, TRADES)}"
    return f"{name} {pick(rng, COMPANY_SUFFIXES)}" if suffix else name


def customer_name(rng: Random) -> str:
    """A commercial customer or job site: "Lakeside Dental Group"."""
    return f"{pick(rng, PLACE_WORDS)} {pick(rng, SITE_KINDS)}"


def person(rng: Random) -> Person:
    return Person(pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES))


def street(rng: Random, *, short: bool = False) -> str:
    """A street line: number, name, type (abbreviated when `short`)."""
    long_type, short_type = pick(rng, STREET_TYPES)
    return f"{rng.randint(10, 9999)} {pick(rng, STREET_NAMES)} {short_type if short else long_type}"


def address(rng: Random, *, short: bool = False, suite: float = 0.2) -> Address:
    """A full postal address; a second line (a suite) with probability `suite`."""
    line1 = street(rng, short=short)
    line2 = f"Suite {rng.randint(100, 499)}" if rng.random() < suite else ""
    city = pick(rng, CITIES)
    return Address(line1, line2, city.name, city.state, city.postcode, city.country)


PHONE_STYLES = ("paren", "dashed", "digits", "intl", "e164")


def phone(rng: Random, style: str = "paren") -> str:
    """A fictional phone number (555 exchange) in one of PHONE_STYLES:
    "(415) 555-0134", "415-555-0134", "4155550134", "+1 (415) 555-0134", "+14155550134"."""
    area, line = rng.randint(201, 989), rng.randint(0, 9999)
    forms = {
        "paren": f"({area}) 555-{line:04d}",
        "dashed": f"{area}-555-{line:04d}",
        "digits": f"{area}555{line:04d}",
        "intl": f"+1 ({area}) 555-{line:04d}",
        "e164": f"+1{area}555{line:04d}",
    }
    if style not in forms:
        raise ValueError(f"unknown phone style {style!r}; one of {PHONE_STYLES}")
    return forms[style]


def slug(text: str, limit: int = 20) -> str:
    """Lower-case letters and digits of `text`, at most `limit`: the mailbox/domain form of a name."""
    return re.sub(r"[^a-z0-9]", "", text.lower())[:limit]


def domain_for(name: str, tld: str = "example.com", limit: int = 20) -> str:
    """The fictional web domain of a company: "acmesupplyco.example.com"."""
    return f"{slug(name, limit) or 'company'}.{tld}"


def email_for(name: str, mailbox: str = "ap", tld: str = "example.com", limit: int = 20) -> str:
    """A company mailbox, by default accounts payable: "ap@acmesupplyco.example.com"."""
    return f"{mailbox}@{domain_for(name, tld, limit)}"


def person_email(who: Person, domain: str = "example.com") -> str:
    return f"{who.username}@{domain}"


def tax_id(rng: Random) -> str:
    """An employer-identification-number form, "12-3456789"."""
    return f"{rng.randint(10, 99)}-{rng.randint(1000000, 9999999)}"


def item(rng: Random, *, equipment: float = 0.0) -> Item:
    """A stocked part; a big-ticket piece of equipment with probability `equipment`."""
    return pick(rng, EQUIPMENT) if equipment and rng.random() < equipment else pick(rng, ITEMS)


def gl_account(rng: Random, kind: str | None = None) -> Account:
    """An account from the chart, of the given kind (Asset, Liability, Equity, Income, Expense)."""
    accounts = GL_ACCOUNTS if kind is None else tuple(a for a in GL_ACCOUNTS if a.kind == kind)
    if not accounts:
        raise ValueError(f"no accounts of kind {kind!r}; one of {ACCOUNT_KINDS}")
    return pick(rng, accounts)


def cost_code(rng: Random) -> CostCode:
    return pick(rng, COST_CODES)


def project_name(rng: Random) -> str:
    """A construction job: a listed project, sometimes with its phase or kind of work."""
    name = pick(rng, PROJECT_NAMES)
    return f"{name} {pick(rng, PROJECT_KINDS)}" if rng.random() < 0.5 else name


def amount(rng: Random, low: float, high: float) -> Decimal:
    """A money amount in whole cents between `low` and `high`."""
    return Decimal(rng.randint(round(low * 100), round(high * 100))) / 100


def near_duplicate(rng: Random, name: str) -> str:
    """The same company typed differently, as records drift apart across systems: case,
    suffix spelling, punctuation, doubled space, '&' against 'and', two letters swapped.
    Always differs from `name`."""
    variants = [name.upper(), re.sub(r"[.,]", "", name), name.replace(" ", "  ", 1)]
    for suffix, others in SUFFIX_SPELLINGS.items():
        if name.endswith(" " + suffix):
            stem = name[: -len(suffix) - 1]
            variants.extend(f"{stem}{other}" if other.startswith(",") else f"{stem} {other}" for other in others)
            break
    variants.append(name.replace("&", "and") if "&" in name else name + " ")
    letters = [i for i in range(1, len(name) - 2) if name[i].islower() and name[i + 1].islower()
               and name[i] != name[i + 1]]
    if letters:
        i = pick(rng, letters)
        variants.append(name[:i] + name[i + 1] + name[i] + name[i + 2:])
    different = [v for v in variants if v != name]
    return pick(rng, different) if different else name + "."


def near_duplicate_street(rng: Random, line: str) -> str:
    """The same street line spelled the other way: "Main Street" <-> "Main St.", or upper case."""
    for long_type, short_type in STREET_TYPES:
        if long_type == short_type:
            continue
        for this, that in ((long_type, short_type), (short_type, long_type), (short_type.rstrip("."), long_type)):
            if line.endswith(" " + this):
                return line[: -len(this)] + that
    return line.upper() if rng.random() < 0.5 and line.upper() != line else line + "."
