"""The flash release (issue 12): what a claim sends to the database.

Seen from the server's own general log (mysql.general_log, the statements
of the app's account only): under a sold-out storm a claim is one lock-free
read (no GET_LOCK, no transaction, no write), rows 4 and 8 still answered
before row 9; a creating claim sends the ticket first and the seat last,
with the COMMIT right after the seat."""

from helpers import path, assert_error, rows, issued, general_log


def claim(stack, user, event):
    return stack.request("POST", path(event), token=stack.token(user))


WRITES = ("GET_LOCK", "RELEASE_LOCK", "START TRANSACTION", "COMMIT",
          "ROLLBACK", "UPDATE ", "INSERT ")


def test_sold_out_is_one_lock_free_read(stack):
    stack.make_event(7, quota=1)
    for u in range(1, 8):
        stack.make_user(u)
    stack.make_order(6, 7, status="paid")
    assert claim(stack, 1, 7).status == 201
    log = []
    with general_log(stack, log):
        for u in (2, 3, 4, 5):
            assert_error(claim(stack, u, 7), 409, "sold_out")
        # row 8 before row 9, row 4 before both: still from that one read
        assert_error(claim(stack, 6, 7), 409, "paid_order_exists")
        assert claim(stack, 1, 7).status == 200
    texts = [a for _, a in log]
    assert len(texts) == 6, texts
    for a in texts:
        assert a.upper().startswith("SELECT "), a
        assert not any(w in a.upper() for w in WRITES), a
    assert rows(stack, event=7) == 1 and issued(stack, 7) == 1


def test_creating_claim_sends_ticket_first_seat_last(stack):
    stack.make_event(7)
    stack.make_user(1)
    log = []
    with general_log(stack, log):
        assert claim(stack, 1, 7).status == 201
    texts = [a.upper() for _, a in log]
    kinds = []
    for a in texts:
        for k in ("GET_LOCK", "RELEASE_LOCK", "START TRANSACTION",
                  "INSERT INTO FREE_TICKETS", "UPDATE EVENTS", "COMMIT"):
            if k in a:
                kinds.append(k)
                break
        else:
            kinds.append("SELECT" if a.startswith("SELECT") else a)
    assert kinds == ["SELECT", "GET_LOCK", "START TRANSACTION",
                     "INSERT INTO FREE_TICKETS", "UPDATE EVENTS", "COMMIT",
                     "RELEASE_LOCK"], kinds
    # one session did it all, so the lock and the transaction are its own
    assert len({t for t, _ in log}) == 1, log
