import { describe, expect, it } from 'vitest'
import { pendingCount, sortMessages, toChatItems } from '../src/lib/messages'
import type { Message } from '../src/lib/types'

const msg = (id: string, type: 'INBOUND' | 'OUTBOUND', timestamp: string): Message => ({
  id,
  type,
  content: id,
  timestamp,
})

describe('message ordering', () => {
  it('sorts chronologically across offsets, stable on ties', () => {
    const list = [
      msg('c', 'INBOUND', '2026-01-01T00:00:03Z'),
      msg('a', 'INBOUND', '2026-01-01T01:00:01+01:00'),
      msg('b1', 'OUTBOUND', '2026-01-01T00:00:02Z'),
      msg('b2', 'INBOUND', '2026-01-01T00:00:02Z'),
    ]
    expect(sortMessages(list).map((m) => m.id)).toEqual(['a', 'b1', 'b2', 'c'])
    expect(list[0].id).toBe('c') // input untouched
  })

  it('puts unparsable timestamps last', () => {
    const list = [msg('x', 'INBOUND', 'garbage'), msg('a', 'INBOUND', '2026-01-01T00:00:00Z')]
    expect(sortMessages(list).map((m) => m.id)).toEqual(['a', 'x'])
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
