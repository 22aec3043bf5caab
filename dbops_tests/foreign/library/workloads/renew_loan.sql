-- The library's own write: renew one of a member's open loans of the last week.
\set member random(1, 400)
UPDATE lending.loans SET due_on = due_on + 7
WHERE (id, loaned_on) IN (SELECT id, loaned_on FROM lending.loans
                          WHERE member_id = :member AND status = 'out' AND loaned_on > current_date - 7 LIMIT 1);
