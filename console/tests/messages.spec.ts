import { describe, expect, it } from 'vitest'
import { pendingCount, toChatItems } from '../src/lib/messages'
import type { Message } from '../src/lib/types'

const msg = (id: string, type: 'INBOUND' | 'OUTBOUND', timestamp: string): Message => ({
  id,
  type,
  content: id,
  timestamp,
})

describe('message ordering', () => {
  it('keeps the order the service recorded, whatever the timestamps say', () => {
    // The customer's phone runs a minute ahead of the server: both messages carry later
    // timestamps than the reply that answers them, which the API lists after them.
    const list = [
      msg('m1', 'INBOUND', '2026-01-01T00:01:01Z'),
      msg('m2', 'INBOUND', '2026-01-01T00:01:03Z'),
      msg('r1', 'OUTBOUND', '2026-01-01T00:00:08Z'),
      msg('m3', 'INBOUND', 'garbage'),
    ]
    expect(toChatItems(list, null).map((i) => i.message.id)).toEqual(['m1', 'm2', 'r1', 'm3'])
    expect(list.map((m) => m.id)).toEqual(['m1', 'm2', 'r1', 'm3']) // input untouched
  })
})

describe('pending grouping', () => {
  const list = [
    msg('m1', 'INBOUND', '2026-01-01T00:00:01Z'),
    msg('r1', 'OUTBOUND', '2026-01-01T00:00:06Z'),
    msg('m2', 'INBOUND', '2026-01-01T00:00:10Z'),
    msg('m3', 'INBOUND', '2026-01-01T00:00:11Z'),
  ]

  it('marks only inbound messages of the open group', () => {
    const group = {
      message_ids: ['m2', 'm3', 'r1'],
      last_arrival_at: '2026-01-01T00:00:11Z',
      reply_due_at: '2026-01-01T00:00:16Z',
    }
    const items = toChatItems(list, group)
    expect(items.map((i) => [i.message.id, i.pending])).toEqual([
      ['m1', false],
      ['r1', false],
      ['m2', true],
      ['m3', true],
    ])
    expect(pendingCount(items)).toBe(2)
  })

  it('has nothing pending without a group', () => {
    expect(pendingCount(toChatItems(list, null))).toBe(0)
    expect(pendingCount(toChatItems(list, undefined))).toBe(0)
  })
})
